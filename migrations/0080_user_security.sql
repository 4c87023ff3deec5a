-- Account security in the database: TOTP secrets encrypted with pgcrypto, one-time backup codes stored as bcrypt
-- hashes, and lockout after repeated failed log-ins. The encryption key is the application's (a setting), never
-- stored in the database; these functions run with the caller's rights.

CREATE FUNCTION user_enable_two_factor(p_user uuid, p_secret text, p_key text) RETURNS void
LANGUAGE sql AS $$
    UPDATE users SET two_factor_secret = pgp_sym_encrypt(p_secret, p_key, 'cipher-algo=aes256'),
                     two_factor_enabled = true
     WHERE id = p_user
$$;

CREATE FUNCTION user_disable_two_factor(p_user uuid) RETURNS void
LANGUAGE sql AS $$
    UPDATE users SET two_factor_enabled = false, two_factor_secret = NULL, two_factor_backup_codes = '{}'
     WHERE id = p_user
$$;

CREATE FUNCTION user_two_factor_secret(p_user uuid, p_key text) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT pgp_sym_decrypt(two_factor_secret, p_key) FROM users WHERE id = p_user AND two_factor_enabled
$$;

-- Replaces the backup codes; only bcrypt hashes are kept.
CREATE FUNCTION user_set_backup_codes(p_user uuid, p_codes text[]) RETURNS void
LANGUAGE sql AS $$
    UPDATE users
       SET two_factor_backup_codes = ARRAY(SELECT crypt(c, gen_salt('bf', 10)) FROM unnest(p_codes) AS c)
     WHERE id = p_user
$$;

-- Consumes a backup code: true (and the code is gone) when it matches one, false otherwise.
CREATE FUNCTION user_use_backup_code(p_user uuid, p_code text) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    matched text;
BEGIN
    SELECT h INTO matched
      FROM users, unnest(two_factor_backup_codes) AS h
     WHERE id = p_user AND h = crypt(p_code, h)
     LIMIT 1;
    IF matched IS NULL THEN
        RETURN false;
    END IF;
    UPDATE users SET two_factor_backup_codes = array_remove(two_factor_backup_codes, matched) WHERE id = p_user;
    RETURN true;
END
$$;

-- Records a failed log-in; after p_max_attempts consecutive failures the account locks for p_lock.
-- Returns locked_until (NULL while not locked).
CREATE FUNCTION user_login_failed(p_user uuid, p_max_attempts integer DEFAULT 5,
                                  p_lock interval DEFAULT interval '15 minutes') RETURNS timestamptz
LANGUAGE sql AS $$
    UPDATE users
       SET failed_login_attempts = failed_login_attempts + 1,
           locked_until = CASE WHEN failed_login_attempts + 1 >= p_max_attempts THEN now() + p_lock
                               ELSE locked_until END
     WHERE id = p_user
    RETURNING locked_until
$$;

CREATE FUNCTION user_login_succeeded(p_user uuid) RETURNS void
LANGUAGE sql AS $$
    UPDATE users SET failed_login_attempts = 0, locked_until = NULL, last_login_at = now() WHERE id = p_user
$$;

CREATE FUNCTION user_is_locked(p_user uuid) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT coalesce(locked_until > now(), false) FROM users WHERE id = p_user
$$;

REVOKE ALL ON FUNCTION user_enable_two_factor(uuid, text, text), user_disable_two_factor(uuid),
    user_two_factor_secret(uuid, text), user_set_backup_codes(uuid, text[]), user_use_backup_code(uuid, text),
    user_login_failed(uuid, integer, interval), user_login_succeeded(uuid), user_is_locked(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION user_enable_two_factor(uuid, text, text), user_disable_two_factor(uuid),
    user_two_factor_secret(uuid, text), user_set_backup_codes(uuid, text[]), user_use_backup_code(uuid, text),
    user_login_failed(uuid, integer, interval), user_login_succeeded(uuid), user_is_locked(uuid) TO {{app}};
