-- Idempotency keys (a SHA-256 of each key, per workflow) and the answers they replay; a
-- claim is `running` until its lease ends, so a crashed run does not hold its key for the
-- whole ttl.
CREATE TABLE gateway_idempotency (
    scope       text NOT NULL,
    key         text NOT NULL,
    owner       text NOT NULL,
    state       text NOT NULL,
    lease_until timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    status      integer,
    headers     jsonb,
    body        bytea,
    PRIMARY KEY (scope, key)
);
CREATE INDEX gateway_idempotency_expires ON gateway_idempotency (expires_at);
-- Rate-limit counters shared by instances: one per workflow, caller and fixed window.
CREATE TABLE gateway_rate_limits (
    scope      text NOT NULL,
    who        text NOT NULL,
    bucket     bigint NOT NULL,
    count      integer NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (scope, who)
);
CREATE INDEX gateway_rate_limits_expires ON gateway_rate_limits (expires_at);
