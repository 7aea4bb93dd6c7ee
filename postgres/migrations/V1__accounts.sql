-- Accounts: who may sign in, what they may spend, and the keys that spend it.
--
-- Tenant isolation, used by every migration after this one:
--   * The role that runs the migrations owns the tables. It is the "system" identity: key
--     authentication by hash, Stripe webhooks, the meter-outbox sender and the admin CLI run
--     as it and see every row (RLS is ENABLEd, not FORCEd, so it does not apply to the owner).
--   * Work done on behalf of one account runs inside a transaction that first does
--         SELECT set_config('role', 'kalshibook_tenant', true),
--                set_config('kalshibook.account_id', $1::uuid::text, true);
--     (the same as SET LOCAL ROLE + SET LOCAL kalshibook.account_id). From then on the policies
--     below hide every other account's rows, so a bug in a WHERE clause cannot leak or touch
--     another tenant's data. Both settings end with the transaction, so a pooled connection
--     never carries a tenant into its next use. Never use plain SET for either.
--   * Without the setting (or with it empty) a tenant session sees nothing and can write
--     nothing: deny by default, never an error.
-- Each file runs in one transaction (refinery), so a failure leaves nothing half-made.

-- Roles are global to the cluster while this migration runs per database: several databases
-- (one per integration test, say) may create the role at the same moment. The loser of that
-- race blocks on the catalog's unique index and then fails with unique_violation (or
-- duplicate_object if it looked after the winner committed); both mean "already there".
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'kalshibook_tenant') THEN
        BEGIN
            CREATE ROLE kalshibook_tenant NOLOGIN NOSUPERUSER NOBYPASSRLS;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;

    -- A pre-existing role with either attribute would silently switch every policy off.
    IF EXISTS (SELECT FROM pg_roles
               WHERE rolname = 'kalshibook_tenant' AND (rolsuper OR rolbypassrls)) THEN
        RAISE EXCEPTION 'role kalshibook_tenant must not be SUPERUSER or BYPASSRLS'
            USING HINT = 'ALTER ROLE kalshibook_tenant NOSUPERUSER NOBYPASSRLS';
    END IF;
END
$$;

-- The application connects as the owner and must be allowed to SET ROLE to the tenant role.
-- Superusers already may (pg_has_role is true for them), which also keeps concurrent runs as a
-- superuser away from pg_auth_members entirely. From PostgreSQL 16 membership and the right to
-- SET ROLE are separate ('SET'); before 16, 'MEMBER' is that right.
DO $$
DECLARE
    may_set_role text := CASE WHEN current_setting('server_version_num')::int >= 160000
                              THEN 'SET' ELSE 'MEMBER' END;
BEGIN
    IF NOT pg_has_role(current_user, 'kalshibook_tenant', may_set_role) THEN
        BEGIN
            GRANT kalshibook_tenant TO CURRENT_USER;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
END
$$;

-- Relies on PUBLIC's default USAGE otherwise; harmless (a warning) if we do not own the schema.
DO $$
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO kalshibook_tenant', current_schema());
END
$$;

-- The one place that reads the tenant setting, so every policy agrees on its meaning. A plain
-- STABLE SQL function is inlined into the policy, so an index on account_id still serves it.
-- NULLIF: once a transaction has SET LOCAL the placeholder, later transactions on the same
-- connection read '' instead of NULL, and ''::uuid would be an error, not "no rows".
CREATE FUNCTION current_account_id() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    RETURN nullif(current_setting('kalshibook.account_id', true), '')::uuid;

-- Ledger and audit rows are evidence: once written they are never edited. Statement-level so
-- that even an UPDATE matching no row is refused (it is always a bug). An operator who must
-- prune deliberately can DISABLE TRIGGER for that one maintenance transaction.
CREATE FUNCTION refuse_change_to_append_only() RETURNS trigger
    LANGUAGE plpgsql AS
$$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;


-- A person with a dashboard login. Accounts outlive a disabled user (disabled_at), so rows are
-- not deleted while they have billing history.
CREATE TABLE users (
    id            uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    -- Stored as typed, so mail goes out the way the user wrote it; uniqueness and lookup are
    -- case-insensitive through the index below (citext would need CREATE EXTENSION).
    email         text        NOT NULL CHECK (position('@' IN email) > 1),
    -- A PHC string from argon2; the check stops a plaintext password from ever being stored.
    password_hash text        NOT NULL CHECK (password_hash LIKE '$argon2%'),
    created_at    timestamptz NOT NULL DEFAULT now(),
    disabled_at   timestamptz
);
-- Look a user up with WHERE lower(email) = lower($1) so this index serves it.
CREATE UNIQUE INDEX users_email_key ON users (lower(email));


-- One per user: the unit that is billed, limited and isolated (the tenant).
CREATE TABLE billing_accounts (
    id                     uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id                uuid        NOT NULL UNIQUE REFERENCES users (id),
    -- text + CHECK rather than an enum: the driver maps it to String with no custom type, and
    -- adding a tier is one ALTER of the constraint.
    tier                   text        NOT NULL CHECK (tier IN ('free', 'payg', 'project')),
    -- Whole credits for the current cycle. credits_used may exceed credits_total when overage
    -- is billed (PAYG), so the spend limit lives in the charging UPDATE's WHERE clause (one row
    -- lock, so concurrent requests cannot overspend), not in a CHECK that a downgrade could
    -- violate.
    credits_total          bigint      NOT NULL CHECK (credits_total >= 0),
    credits_used           bigint      NOT NULL DEFAULT 0 CHECK (credits_used >= 0),
    payg_enabled           boolean     NOT NULL DEFAULT false,
    -- Webhooks arrive keyed by these; unique so one Stripe object can never credit two accounts.
    stripe_customer_id     text        UNIQUE,
    stripe_subscription_id text        UNIQUE,
    cycle_start            timestamptz NOT NULL,
    cycle_end              timestamptz NOT NULL,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now(),
    CHECK (cycle_end > cycle_start)
);


-- Only SHA-256 of the secret is kept, so a database leak yields no usable key; the full key is
-- shown once at creation. Keys are revoked, never deleted, so ledger rows keep their key.
CREATE TABLE api_keys (
    id           uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    account_id   uuid        NOT NULL REFERENCES billing_accounts (id),
    name         text        NOT NULL,
    -- The visible start of the key (e.g. 'kb_live_AbCd') so a user can tell keys apart.
    key_prefix   text        NOT NULL,
    -- The unique constraint's index is what authentication looks keys up by, on every request.
    key_hash     bytea       NOT NULL UNIQUE CHECK (octet_length(key_hash) = 32),
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz,
    -- Target of composite foreign keys (ledger, usage) that prove a row's key belongs to the
    -- row's own account.
    UNIQUE (id, account_id)
);
CREATE INDEX api_keys_account_idx ON api_keys (account_id, created_at);


-- Dashboard refresh tokens (the JWT itself is stateless). Stored hashed like API keys;
-- rotation revokes the presented token and inserts its successor.
CREATE TABLE sessions (
    id         uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id    uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash bytea       NOT NULL UNIQUE CHECK (octet_length(token_hash) = 32),
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz,
    CHECK (expires_at > created_at)
);
CREATE INDEX sessions_user_idx ON sessions (user_id);


-- Tenant access. Grants say which statements the tenant role may run at all (least privilege:
-- tier, Stripe ids, credits_total and password hashes are written by system paths only);
-- policies say which rows. Each table gets one FOR ALL policy because the grants already
-- restrict the commands.

ALTER TABLE billing_accounts ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON billing_accounts TO kalshibook_tenant
    USING (id = current_account_id())
    WITH CHECK (id = current_account_id());
-- Charging a request is the tenant's own UPDATE of credits_used.
GRANT SELECT, UPDATE (credits_used, updated_at) ON billing_accounts TO kalshibook_tenant;

-- users carries no account id: a tenant sees the one user its account belongs to.
ALTER TABLE users ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON users TO kalshibook_tenant
    USING (id IN (SELECT user_id FROM billing_accounts WHERE id = current_account_id()));
-- Column list: no tenant query can read password_hash, whatever it selects.
GRANT SELECT (id, email, created_at, disabled_at) ON users TO kalshibook_tenant;

ALTER TABLE api_keys ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON api_keys TO kalshibook_tenant
    USING (account_id = current_account_id())
    WITH CHECK (account_id = current_account_id());
GRANT SELECT, INSERT, UPDATE (name, last_used_at, revoked_at) ON api_keys TO kalshibook_tenant;

ALTER TABLE sessions ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON sessions TO kalshibook_tenant
    USING (user_id IN (SELECT user_id FROM billing_accounts WHERE id = current_account_id()))
    WITH CHECK (user_id IN (SELECT user_id FROM billing_accounts WHERE id = current_account_id()));
-- Refreshing happens before any tenant is known (system path); the tenant lists and logs out.
GRANT SELECT, INSERT, UPDATE (revoked_at) ON sessions TO kalshibook_tenant;
