-- Users' passwords (argon2id hashes) by their e-mail address, folded to lower case; the user
-- record itself is an ordinary record of type `user`, written in the same transaction.
CREATE TABLE gateway_credentials (
    email         TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL
);

-- Users' session tokens: only a SHA-256 of each token is kept.
CREATE TABLE gateway_tokens (
    hash         TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    expires_at   TEXT NOT NULL,
    last_used_at TEXT NOT NULL
);
CREATE INDEX gateway_tokens_user ON gateway_tokens (user_id);
