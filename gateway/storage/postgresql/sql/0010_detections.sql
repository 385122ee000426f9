-- Detection windows (`gateway detect --start NAME`): the first request to
-- /api/1.1/wf/NAME/initialize while one is open is kept as its sample, and closes it.
CREATE TABLE gateway_detections (
    name       text PRIMARY KEY,
    opened_at  timestamptz NOT NULL,
    until      timestamptz NOT NULL,
    headers    boolean NOT NULL,
    sample     text,
    sampled_at timestamptz
);
