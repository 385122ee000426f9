-- Records of every data type, as JSON documents; system fields are real columns.
-- Datetimes are fixed-width ISO 8601 UTC text, so text order is time order.
CREATE TABLE gateway_records (
    id          TEXT PRIMARY KEY,
    type        TEXT NOT NULL,
    data        TEXT NOT NULL CHECK (json_valid(data)),
    created_at  TEXT NOT NULL,
    modified_at TEXT NOT NULL,
    created_by  TEXT
);
CREATE INDEX gateway_records_type_created ON gateway_records (type, created_at, id);

-- The run log: the whole run as JSON plus the columns it is listed and purged by.
CREATE TABLE gateway_runs (
    id         TEXT PRIMARY KEY,
    workflow   TEXT NOT NULL,
    status     TEXT NOT NULL,
    started_at TEXT NOT NULL,
    data       TEXT NOT NULL
);
CREATE INDEX gateway_runs_started ON gateway_runs (started_at);
CREATE INDEX gateway_runs_workflow_started ON gateway_runs (workflow, started_at);
CREATE INDEX gateway_runs_status_started ON gateway_runs (status, started_at);
