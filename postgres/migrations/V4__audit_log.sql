-- Who did what to which account: key creation and revocation, plan changes from webhooks,
-- operator actions from the admin CLI. Append-only, like the ledger.
CREATE TABLE audit_log (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT now(),
    -- Free text so every kind of actor fits: 'user:<uuid>', 'stripe:<event id>', 'cli:<login>'.
    actor      text        NOT NULL,
    -- NULL for system-wide events; those rows are invisible to every tenant.
    account_id uuid        REFERENCES billing_accounts (id),
    action     text        NOT NULL,
    detail     jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_account_idx ON audit_log (account_id, at);

CREATE TRIGGER audit_log_append_only
    BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change_to_append_only();


ALTER TABLE audit_log ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit_log TO kalshibook_tenant
    USING (account_id = current_account_id())
    WITH CHECK (account_id = current_account_id());
GRANT SELECT, INSERT ON audit_log TO kalshibook_tenant;
