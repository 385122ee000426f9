-- Jobs: scheduled runs, recurring ticks and database-trigger runs, claimed by workers with
-- a lease. `unique_key` makes a recurring tick (event + due time) exist once, whatever the
-- number of instances that plan it; `subject` is the record a per-record event is for.
CREATE TABLE gateway_jobs (
    id          text PRIMARY KEY,
    workflow    text NOT NULL,
    source      text NOT NULL,
    status      text NOT NULL,
    due_at      timestamptz NOT NULL,
    attempt     integer NOT NULL DEFAULT 0,
    lease_until timestamptz,
    worker      text,
    unique_key  text UNIQUE,
    subject     text,
    created_at  timestamptz NOT NULL,
    finished_at timestamptz,
    run_id      text,
    error       text,
    data        jsonb NOT NULL
);
CREATE INDEX gateway_jobs_pending ON gateway_jobs (due_at) WHERE status = 'pending';
CREATE INDEX gateway_jobs_running ON gateway_jobs (lease_until) WHERE status = 'running';
CREATE INDEX gateway_jobs_workflow ON gateway_jobs (workflow, due_at);

-- What is paused: a workflow (or recurring event, or trigger) by name, or '*' for all.
CREATE TABLE gateway_paused (
    workflow  text PRIMARY KEY,
    paused_at timestamptz NOT NULL
);
