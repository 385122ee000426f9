-- Detection windows (`gateway detect --start NAME`): the first request to
-- /api/1.1/wf/NAME/initialize while one is open is kept as its sample, and closes it.
CREATE TABLE gateway_detections (
    name       TEXT PRIMARY KEY,
    opened_at  TEXT NOT NULL,
    until      TEXT NOT NULL,
    headers    INTEGER NOT NULL,
    sample     TEXT,
    sampled_at TEXT
);
