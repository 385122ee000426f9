-- Admin API keys: only a SHA-256 of each key is kept. A revoked key keeps its row (and its
-- label) so that `gateway keys list` can say when it was revoked.
CREATE TABLE gateway_keys (
    label        TEXT PRIMARY KEY,
    hash         TEXT NOT NULL UNIQUE,
    created_at   TEXT NOT NULL,
    last_used_at TEXT,
    revoked_at   TEXT
);
