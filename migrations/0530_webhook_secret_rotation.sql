-- Rotating a webhook endpoint's signing secret from the app role (`python -m processors.delivery endpoints
-- rotate-secret`). The app may set secrets but never read them back (0500's column grants), so it cannot copy the
-- current secret into previous_secret itself. A row trigger can, without widening any grant or adding an
-- owner-rights function: a trigger sees OLD whatever the caller's column privileges, and hands nothing back.
--
-- The app rotates with one UPDATE that sets the new secret and previous_secret_expires_at:
--   UPDATE webhook_endpoints SET secret = $new, previous_secret_expires_at = $until WHERE id = $id
-- $until not NULL: the replaced secret becomes previous_secret and also signs (a second v1=) until then;
-- NULL: it stops at once. An UPDATE that sets previous_secret itself (the owner's) is left as written. The change
-- is audited with the acting user by webhook_endpoints_audit (0500), secrets redacted.

CREATE FUNCTION webhook_endpoints_keep_previous_secret() RETURNS trigger
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
BEGIN
    IF NEW.secret IS DISTINCT FROM OLD.secret AND NEW.previous_secret IS NOT DISTINCT FROM OLD.previous_secret THEN
        NEW.previous_secret := CASE WHEN NEW.previous_secret_expires_at IS NOT NULL THEN OLD.secret END;
    END IF;
    RETURN NEW;
END
$$;
REVOKE ALL ON FUNCTION webhook_endpoints_keep_previous_secret() FROM PUBLIC;

CREATE TRIGGER webhook_endpoints_keep_previous_secret BEFORE UPDATE OF secret ON webhook_endpoints
    FOR EACH ROW EXECUTE FUNCTION webhook_endpoints_keep_previous_secret();
