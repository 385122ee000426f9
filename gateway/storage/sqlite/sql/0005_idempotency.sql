-- Idempotency keys (a SHA-256 of each key, per workflow) and the answers they replay; a
-- claim is `running` until its lease ends, so a crashed run does not hold its key for the
-- whole ttl.
CREATE TABLE gateway_idempotency (
    scope       TEXT NOT NULL,
    key         TEXT NOT NULL,
    owner       TEXT NOT NULL,
    state       TEXT NOT NULL,
    lease_until TEXT NOT NULL,
    expires_at  TEXT NOT NULL,
    status      INTEGER,
    headers     TEXT,
    body        BLOB,
    PRIMARY KEY (scope, key)
);
CREATE INDEX gateway_idempotency_expires ON gateway_idempotency (expires_at);
-- Rate-limit counters shared by instances: one per workflow, caller and fixed window.
CREATE TABLE gateway_rate_limits (
    scope      TEXT NOT NULL,
    who        TEXT NOT NULL,
    bucket     INTEGER NOT NULL,
    count      INTEGER NOT NULL,
    expires_at TEXT NOT NULL,
    PRIMARY KEY (scope, who)
);
CREATE INDEX gateway_rate_limits_expires ON gateway_rate_limits (expires_at);
