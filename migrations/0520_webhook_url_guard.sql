-- The configuration-time part of the webhook SSRF guard. processors/delivery/ssrf.py holds the whole policy and
-- checks every delivery after DNS resolution; the schema refuses, whatever the deployment allows, the endpoint URLs
-- whose host is a literal address nobody may reach from the dispatcher: cloud metadata services, unspecified,
-- multicast, reserved (240/4, broadcast) — also spelled as IPv4-mapped or 6to4 IPv6 — and legacy numeric IPv4
-- spellings that resolvers map onto an address (127.1, 2130706433, 0x7f.0.0.1, 010.0.0.1). Loopback and private
-- addresses depend on DELIVERY_WEBHOOK_ALLOW_PRIVATE, and names need DNS: the dispatcher refuses those when it
-- delivers. The reason codes are the dispatcher's (tests/delivery/test_webhook_ssrf.py checks they agree).

CREATE FUNCTION webhook_url_refusal(url text) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    host text := lower(substring(url FROM '^[A-Za-z][A-Za-z0-9+.-]*://(?:[^/?#@]*@)?(\[[^]]*\]|[^:/?#]*)'));
    address inet;
BEGIN
    IF host IS NULL OR host = '' THEN
        RETURN 'url_invalid';
    END IF;
    IF left(host, 1) = '[' THEN
        BEGIN
            address := split_part(btrim(host, '[]'), '%', 1)::inet;
        EXCEPTION WHEN invalid_text_representation THEN
            RETURN 'url_invalid';
        END;
    ELSIF host ~ '^(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}$' THEN
        address := host::inet;
    ELSIF host ~ '^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}$' THEN
        RETURN 'url_invalid';
    ELSE
        RETURN NULL;  -- a name: judged after DNS resolution, at delivery
    END IF;
    IF address << '::ffff:0.0.0.0/96'::inet THEN
        address := '0.0.0.0'::inet + (address - '::ffff:0.0.0.0'::inet);
    END IF;
    IF address = ANY ('{0.0.0.0, ::}'::inet[]) OR address <<= '2002::/48'::inet THEN
        RETURN 'address_unspecified';
    END IF;
    IF address <<= ANY ('{169.254.169.254/32, 100.100.100.200/32, fd00:ec2::254/128,
                          2002:a9fe:a9fe::/48, 2002:6464:64c8::/48}'::inet[]) THEN
        RETURN 'address_metadata';
    END IF;
    IF address <<= ANY ('{224.0.0.0/4, ff00::/8, 2002:e000::/20}'::inet[]) THEN
        RETURN 'address_multicast';
    END IF;
    IF address <<= ANY ('{240.0.0.0/4, 2002:f000::/20}'::inet[]) THEN
        RETURN 'address_reserved';
    END IF;
    RETURN NULL;
END
$$;

ALTER TABLE webhook_endpoints
    ADD CONSTRAINT webhook_endpoints_url_target CHECK (webhook_url_refusal(url) IS NULL);
