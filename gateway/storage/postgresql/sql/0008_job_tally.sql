-- How many jobs of each workflow are pending, as a tally of changes: a trigger on every
-- statement that updates or deletes jobs appends, per workflow, how many pending jobs it
-- added or took away, an enqueue appends how many it wrote (`add_pending`: a trigger on
-- insert would first copy every new job, 100,000 for one list, into a transition table),
-- and the sum of a workflow's rows is its count. The bounds on pending jobs
-- (`limits.max_pending_jobs`, `max_pending_jobs_per_workflow`) are checked by summing this
-- short table, not by counting jobs. Appended rather than updated in place: a run that
-- cancels jobs holds its transaction open until it ends, and a counter row it updated would
-- hold every other enqueue and claim of that workflow as long. The enqueue that finds the
-- tally long folds it into a row per workflow (`compact_job_tally`).
CREATE TABLE gateway_job_tally (
    workflow text NOT NULL,
    pending  bigint NOT NULL
);

INSERT INTO gateway_job_tally (workflow, pending)
SELECT workflow, count(*) FROM gateway_jobs WHERE status = 'pending' GROUP BY workflow;

CREATE FUNCTION gateway_job_tally() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO gateway_job_tally (workflow, pending)
        SELECT workflow, -count(*) FROM removed WHERE status = 'pending' GROUP BY workflow;
    ELSE
        INSERT INTO gateway_job_tally (workflow, pending)
        SELECT workflow, sum(change) FROM (
            SELECT workflow, 1 AS change FROM added WHERE status = 'pending'
            UNION ALL
            SELECT workflow, -1 FROM removed WHERE status = 'pending'
        ) AS changes
        GROUP BY workflow HAVING sum(change) <> 0;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER gateway_jobs_tally_update AFTER UPDATE ON gateway_jobs
REFERENCING OLD TABLE AS removed NEW TABLE AS added
FOR EACH STATEMENT EXECUTE FUNCTION gateway_job_tally();
CREATE TRIGGER gateway_jobs_tally_delete AFTER DELETE ON gateway_jobs
REFERENCING OLD TABLE AS removed FOR EACH STATEMENT EXECUTE FUNCTION gateway_job_tally();
