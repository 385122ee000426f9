-- Records of every data type, as JSONB documents; system fields are real columns.
CREATE TABLE gateway_records (
    id          text PRIMARY KEY,
    type        text NOT NULL,
    data        jsonb NOT NULL,
    created_at  timestamptz NOT NULL,
    modified_at timestamptz NOT NULL,
    created_by  text
);
CREATE INDEX gateway_records_type_created ON gateway_records (type, created_at, id);

-- The run log: the whole run as JSONB plus the columns it is listed and purged by.
CREATE TABLE gateway_runs (
    id         text PRIMARY KEY,
    workflow   text NOT NULL,
    status     text NOT NULL,
    started_at timestamptz NOT NULL,
    data       jsonb NOT NULL
);
CREATE INDEX gateway_runs_started ON gateway_runs (started_at);
CREATE INDEX gateway_runs_workflow_started ON gateway_runs (workflow, started_at);
CREATE INDEX gateway_runs_status_started ON gateway_runs (status, started_at);
