-- Credits: the ledger that explains every change to a balance, and the usage counters the
-- dashboard charts. The balance itself is billing_accounts.credits_used, updated in the same
-- transaction as the ledger row, so the two never disagree.

-- One row per charge, refund or grant: the audit trail behind credits_used and the answer to
-- "why was I charged". Append-only (trigger below) and never cascaded away (plain foreign keys
-- without ON DELETE), because it is what a billing dispute is settled from.
CREATE TABLE credit_ledger (
    -- An identity, not a serial: INSERT privilege alone covers it, so the tenant role needs no
    -- separate grant on a sequence.
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id uuid        NOT NULL REFERENCES billing_accounts (id),
    -- NULL for entries no key caused: monthly grants, refunds issued by an operator.
    api_key_id uuid,
    -- The priced operation (e.g. 'orderbook', 'deltas'); the price list lives in the code.
    operation  text        NOT NULL,
    -- Positive spends, negative refunds or grants; zero would be noise.
    credits    bigint      NOT NULL CHECK (credits <> 0),
    -- Ties the charge to the request id returned to the client and found in the logs.
    request_id uuid,
    created_at timestamptz NOT NULL DEFAULT now(),
    -- The key must belong to the same account (MATCH SIMPLE: not checked when the key is NULL).
    FOREIGN KEY (api_key_id, account_id) REFERENCES api_keys (id, account_id)
);
-- Statements and cycle totals read one account over a time range.
CREATE INDEX credit_ledger_account_idx ON credit_ledger (account_id, created_at);

CREATE TRIGGER credit_ledger_append_only
    BEFORE UPDATE OR DELETE ON credit_ledger
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change_to_append_only();


-- Pre-aggregated request and credit counts, so usage(from, to, groupBy) is a range scan over a
-- few thousand rows instead of a scan of the ledger. Written by a batcher that sums in memory
-- and upserts every few seconds:
--     INSERT INTO usage AS u (...) VALUES (...)
--     ON CONFLICT (account_id, bucket_secs, bucket_start, api_key_id, operation)
--     DO UPDATE SET requests = u.requests + excluded.requests,
--                   credits  = u.credits  + excluded.credits;
-- Each batch writes both granularities: minute rows for recent, fine-grained charts (and they
-- may be pruned after some days), hour rows for everything longer (kept). A query picks the
-- coarsest granularity that fits its groupBy, then sums by key, operation or
-- date_trunc(bucket_start).
CREATE TABLE usage (
    account_id   uuid        NOT NULL REFERENCES billing_accounts (id),
    api_key_id   uuid        NOT NULL,
    operation    text        NOT NULL,
    bucket_secs  integer     NOT NULL CHECK (bucket_secs IN (60, 3600)),
    -- UTC-aligned to bucket_secs, so rows from different writers fall into the same bucket.
    bucket_start timestamptz NOT NULL
        CHECK (extract(epoch FROM bucket_start) % bucket_secs = 0),
    requests     bigint      NOT NULL DEFAULT 0 CHECK (requests >= 0),
    credits      bigint      NOT NULL DEFAULT 0,
    -- Column order is the access path: one account, one granularity, a time range; the key and
    -- operation come last so the upsert target is the same index.
    PRIMARY KEY (account_id, bucket_secs, bucket_start, api_key_id, operation),
    FOREIGN KEY (api_key_id, account_id) REFERENCES api_keys (id, account_id)
);


ALTER TABLE credit_ledger ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON credit_ledger TO kalshibook_tenant
    USING (account_id = current_account_id())
    WITH CHECK (account_id = current_account_id());
-- The charge (UPDATE billing_accounts + INSERT here) runs in the tenant's transaction.
GRANT SELECT, INSERT ON credit_ledger TO kalshibook_tenant;

ALTER TABLE usage ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON usage TO kalshibook_tenant
    USING (account_id = current_account_id())
    WITH CHECK (account_id = current_account_id());
-- The batcher spans accounts and runs as the owner; UPDATE/INSERT are granted so a per-account
-- upsert inside a tenant transaction works too.
GRANT SELECT, INSERT, UPDATE (requests, credits) ON usage TO kalshibook_tenant;
