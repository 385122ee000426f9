-- Idempotency answers appended in the order they were given, rather than kept in a table
-- keyed by workflow and key: with random keys, every answer dirtied a page of that key's
-- index of its own, written again in the WAL at each commit. An answer is found through
-- gateway_idempotency_slots (the key's first 16 hex digits, and the answer's id), which the
-- gateway fills from the answers added since `gateway_idempotency_indexed.id` in large
-- sorted batches, many keys to a page. The process keeps in memory every key whose answer
-- is not indexed yet, and indexes the rest of them when it starts.
CREATE TABLE gateway_idempotency_answers (
    id          INTEGER PRIMARY KEY,  -- never reused: the purge keeps the newest answer
    scope       TEXT NOT NULL,
    key         TEXT NOT NULL,
    expires_at  TEXT NOT NULL,
    status      INTEGER NOT NULL,
    headers     TEXT NOT NULL,
    body        BLOB NOT NULL
);
CREATE INDEX gateway_idempotency_answers_expires ON gateway_idempotency_answers (expires_at);
CREATE TABLE gateway_idempotency_slots (
    slot TEXT NOT NULL,
    id   INTEGER NOT NULL,
    PRIMARY KEY (slot, id)
) WITHOUT ROWID;
CREATE TABLE gateway_idempotency_indexed (id INTEGER NOT NULL);
INSERT INTO gateway_idempotency_answers (scope, key, expires_at, status, headers, body)
SELECT scope, key, expires_at, status, headers, body FROM gateway_idempotency
WHERE state = 'done' AND status IS NOT NULL ORDER BY expires_at;
INSERT INTO gateway_idempotency_slots (slot, id)
SELECT substr(key, 1, 16), id FROM gateway_idempotency_answers ORDER BY 1, 2;
INSERT INTO gateway_idempotency_indexed (id)
SELECT coalesce(max(id), 0) FROM gateway_idempotency_answers;
DROP TABLE gateway_idempotency;
