-- Stripe: remembering which webhooks were handled, and queueing usage to report.

-- Stripe delivers webhooks at least once and may repeat or reorder them. The handler inserts
-- the event id in the same transaction as its effect:
--     INSERT INTO stripe_events (event_id, type) VALUES ($1, $2)
--     ON CONFLICT (event_id) DO NOTHING RETURNING event_id
-- and returns 200 without acting when nothing comes back, so a retry never applies twice.
-- A row whose processed_at is NULL was recorded but deliberately not acted on (e.g. an event
-- type we do not handle yet). System-only: no tenant grant, so no policy is needed.
CREATE TABLE stripe_events (
    event_id     text        PRIMARY KEY,
    type         text        NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    processed_at timestamptz
);


-- Overage to bill through Stripe meter events, written in the same transaction as the charge
-- that caused it and sent later by a background task: a Stripe outage can neither fail a client
-- request nor lose billable usage. Rows are kept once sent (sent_at) as the record of what was
-- billed.
CREATE TABLE meter_outbox (
    id                 bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id         uuid        NOT NULL REFERENCES billing_accounts (id),
    -- Copied at enqueue time: usage is billed to the customer the account had when it was
    -- spent, even if the account is attached to another customer before the row is sent.
    stripe_customer_id text        NOT NULL,
    event_name         text        NOT NULL CHECK (char_length(event_name) <= 100),
    value              bigint      NOT NULL CHECK (value > 0),
    -- Sent as the meter event's `identifier`. Stripe deduplicates it for only about 24 hours,
    -- so this constraint is what stops a slow retry from billing twice. Stripe's limit is 100.
    identifier         text        NOT NULL UNIQUE CHECK (char_length(identifier) <= 100),
    -- Also the event's timestamp: Stripe refuses events older than 35 days, so a row stuck
    -- longer than that needs an operator, not another retry.
    created_at         timestamptz NOT NULL DEFAULT now(),
    sent_at            timestamptz,
    attempts           integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- Backoff between failed attempts, so one bad row does not spin the sender.
    next_attempt_at    timestamptz NOT NULL DEFAULT now(),
    last_error         text
);
-- The sender's poll, cheap however many sent rows accumulate:
--     SELECT ... FROM meter_outbox WHERE sent_at IS NULL AND next_attempt_at <= now()
--     ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED
CREATE INDEX meter_outbox_pending_idx ON meter_outbox (next_attempt_at) WHERE sent_at IS NULL;
CREATE INDEX meter_outbox_account_idx ON meter_outbox (account_id, created_at);


ALTER TABLE meter_outbox ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON meter_outbox TO kalshibook_tenant
    USING (account_id = current_account_id())
    WITH CHECK (account_id = current_account_id());
-- The tenant's charge enqueues overage; sending spans accounts and runs as the owner.
GRANT SELECT, INSERT ON meter_outbox TO kalshibook_tenant;
