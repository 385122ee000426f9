-- Users' passwords (argon2id hashes) by their e-mail address, folded to lower case; the user
-- record itself is an ordinary record of type `user`, written in the same transaction.
CREATE TABLE gateway_credentials (
    email         text PRIMARY KEY,
    user_id       text NOT NULL UNIQUE,
    password_hash text NOT NULL
);

-- Users' session tokens: only a SHA-256 of each token is kept.
CREATE TABLE gateway_tokens (
    hash         text PRIMARY KEY,
    user_id      text NOT NULL,
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    last_used_at timestamptz NOT NULL
);
CREATE INDEX gateway_tokens_user ON gateway_tokens (user_id);
