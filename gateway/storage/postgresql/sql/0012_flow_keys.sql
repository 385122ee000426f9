-- Concurrency keys (an API workflow's or custom event's `concurrency`): a job may carry a
-- key (its workflow's name and its rendered template) and the most jobs of that key that
-- may run at once. A pending job with a key is claimed only while fewer than its limit of
-- its key's jobs are running (`claim_keyed_jobs`, serialized by an advisory lock); one
-- without is claimed as before. Nullable, no default: adding them rewrites no row.
ALTER TABLE gateway_jobs ADD COLUMN flow_key text, ADD COLUMN flow_limit integer;

-- The running jobs of a key, counted by every keyed claim.
CREATE INDEX gateway_jobs_flow_running ON gateway_jobs (flow_key)
WHERE status = 'running' AND flow_key IS NOT NULL;
-- The keyed pending jobs, soonest due first: whether any is due (every claim asks), and
-- the window a keyed claim ranks. Jobs without a key are not in it.
CREATE INDEX gateway_jobs_flow_pending ON gateway_jobs (due_at)
WHERE status = 'pending' AND flow_key IS NOT NULL;

-- A keyed job that stops running makes room for the next of its key: every instance's
-- workers are woken (a lost notification costs a poll interval, never a job).
CREATE FUNCTION gateway_flow_freed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('gateway_jobs', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER gateway_jobs_flow_freed AFTER UPDATE OF status ON gateway_jobs
FOR EACH ROW WHEN (OLD.flow_key IS NOT NULL AND OLD.status = 'running'
                   AND NEW.status <> 'running')
EXECUTE FUNCTION gateway_flow_freed();
