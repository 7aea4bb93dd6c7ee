-- Billing cycles that roll by themselves: each account's allowance returns at the end of its
-- monthly cycle, at the first charge (or balance read) after that instant, atomically.
--
-- Two columns make a roll computable from the row alone:
--   * cycle_anchor: the instant cycles are counted from. Cycle n is
--     [anchor + n months, anchor + (n+1) months), each computed from the anchor (never chained
--     from the previous end), so an account anchored on Jan 31 runs Feb 28 → Mar 31, not
--     drifting to the 28th. Month arithmetic is done in UTC so no session time zone moves it.
--   * credits_included: the tier's allowance per cycle, written with the tier by system paths.
--     credits_total is this plus the current cycle's grants; a roll sets it back to this.
-- The tier → allowance table itself lives in the code (src/accounts/tier.rs), not here.

ALTER TABLE billing_accounts
    ADD COLUMN cycle_anchor     timestamptz,
    ADD COLUMN credits_included bigint CHECK (credits_included >= 0);
UPDATE billing_accounts SET cycle_anchor = cycle_start, credits_included = credits_total;
ALTER TABLE billing_accounts
    ALTER COLUMN cycle_anchor     SET NOT NULL,
    ALTER COLUMN credits_included SET NOT NULL;

-- An INSERT written before this migration (naming neither column) still works and means what
-- it meant: cycles counted from cycle_start, the allowance being credits_total. A DEFAULT
-- cannot name another column, so a trigger fills them.
CREATE FUNCTION billing_accounts_cycle_defaults() RETURNS trigger
    LANGUAGE plpgsql AS
$$
BEGIN
    NEW.cycle_anchor := coalesce(NEW.cycle_anchor, NEW.cycle_start);
    NEW.credits_included := coalesce(NEW.credits_included, NEW.credits_total);
    RETURN NEW;
END
$$;
CREATE TRIGGER billing_accounts_cycle_defaults
    BEFORE INSERT ON billing_accounts
    FOR EACH ROW EXECUTE FUNCTION billing_accounts_cycle_defaults();


-- The cycle of an account anchored at `anchor` that contains `at` (the first cycle when `at`
-- precedes the anchor). Mirrors BillingCycle::containing in src/accounts/cycle.rs; a test
-- checks that they agree. timestamp + interval 'n months' clamps the day to the month's length
-- and keeps the time of day.
CREATE FUNCTION billing_cycle_containing(
    anchor timestamptz, at timestamptz,
    OUT cycle_start timestamptz, OUT cycle_end timestamptz)
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE STRICT AS
$$
DECLARE
    a timestamp := anchor AT TIME ZONE 'UTC';
    t timestamp := at AT TIME ZONE 'UTC';
    -- The whole-month difference is the answer or one too many (when `at` falls earlier in
    -- its month than the anchor's day and time).
    n integer := (extract(year FROM t)::integer - extract(year FROM a)::integer) * 12
               + extract(month FROM t)::integer - extract(month FROM a)::integer;
BEGIN
    IF a + make_interval(months => n) > t THEN
        n := n - 1;
    END IF;
    n := greatest(n, 0);
    cycle_start := (a + make_interval(months => n)) AT TIME ZONE 'UTC';
    cycle_end := (a + make_interval(months => n + 1)) AT TIME ZONE 'UTC';
END
$$;


-- Rolls `account` into its current cycle if its cycle has ended: usage back to zero, the
-- allowance back to credits_included (dropping the old cycle's grants). Returns whether it
-- rolled. Safe under concurrency: the UPDATE's WHERE is re-checked under the row lock, so of
-- several sessions that saw the cycle end, exactly one rolls and the others change nothing.
--
-- SECURITY DEFINER so that a tenant transaction (the charge) can roll its own account without
-- being granted UPDATE on the cycle columns or credits_total. It can do nothing a tenant could
-- abuse: it only ever applies a roll that is due, and inside a tenant transaction only to that
-- tenant's account. search_path is pinned, as for every SECURITY DEFINER function.
CREATE FUNCTION roll_billing_cycle(account uuid) RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS
$$
DECLARE
    old_end timestamptz;
    new_start timestamptz;
    new_end timestamptz;
    old_used bigint;
BEGIN
    IF current_account_id() IS NOT NULL AND account IS DISTINCT FROM current_account_id() THEN
        RETURN false;
    END IF;
    -- FOR UPDATE first, so the old values can be recorded and the roll is computed from the
    -- row as it is once locked.
    SELECT b.cycle_end, b.credits_used, c.cycle_start, c.cycle_end
      INTO old_end, old_used, new_start, new_end
      FROM billing_accounts b, billing_cycle_containing(b.cycle_anchor, now()) c
     WHERE b.id = account AND b.cycle_end <= now()
       FOR UPDATE OF b;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    UPDATE billing_accounts
       SET cycle_start = new_start, cycle_end = new_end, credits_used = 0,
           credits_total = credits_included, updated_at = now()
     WHERE id = account;
    INSERT INTO audit_log (actor, account_id, action, detail)
    VALUES ('system', account, 'cycle.rolled',
            jsonb_build_object('previous_end', old_end, 'previous_used', old_used,
                               'cycle_start', new_start, 'cycle_end', new_end));
    RETURN true;
END
$$;
REVOKE ALL ON FUNCTION roll_billing_cycle(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION roll_billing_cycle(uuid) TO kalshibook_tenant;
