-- How many jobs of each workflow are pending, so that the bounds on pending jobs
-- (`limits.max_pending_jobs`, `max_pending_jobs_per_workflow`) are checked by reading a few
-- rows, not by counting jobs. Triggers follow every change of a job's status, and a delete;
-- a new job is counted by the enqueue that writes it (`add_pending`: one row per workflow
-- and enqueue, where a trigger would make a list of 100,000 jobs 100,000 upserts). Every
-- write goes through one writer: the counts are exact.
CREATE TABLE gateway_job_counts (
    workflow TEXT PRIMARY KEY,
    pending  INTEGER NOT NULL
) WITHOUT ROWID;

INSERT INTO gateway_job_counts (workflow, pending)
SELECT workflow, count(*) FROM gateway_jobs WHERE status = 'pending' GROUP BY workflow;

CREATE TRIGGER gateway_jobs_count_update AFTER UPDATE OF status ON gateway_jobs
WHEN (OLD.status = 'pending') <> (NEW.status = 'pending')
BEGIN
    INSERT INTO gateway_job_counts (workflow, pending)
    VALUES (NEW.workflow, CASE WHEN NEW.status = 'pending' THEN 1 ELSE -1 END)
    ON CONFLICT (workflow) DO UPDATE SET pending = pending + excluded.pending;
END;

CREATE TRIGGER gateway_jobs_count_delete AFTER DELETE ON gateway_jobs
WHEN OLD.status = 'pending'
BEGIN
    UPDATE gateway_job_counts SET pending = pending - 1 WHERE workflow = OLD.workflow;
END;
