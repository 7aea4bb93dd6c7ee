-- Revoking an API key, by whatever path (API, admin CLI, SQL by hand), announces it on the
-- channel `api_key_revoked` when the revoking transaction commits. Every server replica
-- listens and closes its WebSocket connections that use the key at once, instead of at its
-- next periodic re-check.
CREATE OR REPLACE FUNCTION notify_api_key_revoked() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('api_key_revoked', NEW.id::text);
    RETURN NEW;
END;
$$;

DROP TRIGGER IF EXISTS api_key_revoked ON api_keys;
CREATE TRIGGER api_key_revoked
    AFTER UPDATE OF revoked_at ON api_keys
    FOR EACH ROW
    WHEN (OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL)
    EXECUTE FUNCTION notify_api_key_revoked();
