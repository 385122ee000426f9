-- An idempotency answer's expiry as Unix seconds (REAL) rather than ISO text: the gateway
-- keeps its keys' times as seconds, and an answer stored is then written as it is held.
CREATE TABLE gateway_idempotency_answers_seconds (
    id          INTEGER PRIMARY KEY,  -- never reused: the purge keeps the newest answer
    scope       TEXT NOT NULL,
    key         TEXT NOT NULL,
    expires_at  REAL NOT NULL,
    status      INTEGER NOT NULL,
    headers     TEXT NOT NULL,
    body        BLOB NOT NULL
);
INSERT INTO gateway_idempotency_answers_seconds (id, scope, key, expires_at, status, headers, body)
-- (whole seconds from the text, then its fraction: exact to the microsecond, where julianday
-- rounds to the millisecond)
SELECT id, scope, key,
       strftime('%s', substr(expires_at, 1, 19)) + CAST(substr(expires_at, 20, 7) AS REAL),
       status, headers, body
FROM gateway_idempotency_answers ORDER BY id;
DROP TABLE gateway_idempotency_answers;
ALTER TABLE gateway_idempotency_answers_seconds RENAME TO gateway_idempotency_answers;
CREATE INDEX gateway_idempotency_answers_expires ON gateway_idempotency_answers (expires_at);
