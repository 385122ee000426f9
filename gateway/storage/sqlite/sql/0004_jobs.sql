-- Jobs: scheduled runs, recurring ticks and database-trigger runs, claimed by workers with
-- a lease. `unique_key` makes a recurring tick (event + due time) exist once, whatever the
-- number of instances that plan it; `subject` is the record a per-record event is for.
CREATE TABLE gateway_jobs (
    id          TEXT PRIMARY KEY,
    workflow    TEXT NOT NULL,
    source      TEXT NOT NULL,
    status      TEXT NOT NULL,
    due_at      TEXT NOT NULL,
    attempt     INTEGER NOT NULL DEFAULT 0,
    lease_until TEXT,
    worker      TEXT,
    unique_key  TEXT UNIQUE,
    subject     TEXT,
    created_at  TEXT NOT NULL,
    finished_at TEXT,
    run_id      TEXT,
    error       TEXT,
    data        TEXT NOT NULL
);
CREATE INDEX gateway_jobs_pending ON gateway_jobs (due_at) WHERE status = 'pending';
CREATE INDEX gateway_jobs_running ON gateway_jobs (lease_until) WHERE status = 'running';
CREATE INDEX gateway_jobs_workflow ON gateway_jobs (workflow, due_at);

-- What is paused: a workflow (or recurring event, or trigger) by name, or '*' for all.
CREATE TABLE gateway_paused (
    workflow  TEXT PRIMARY KEY,
    paused_at TEXT NOT NULL
);
