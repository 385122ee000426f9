-- Password reset tokens (`send_password_reset_email`, `reset_password`): only a SHA-256 of
-- each token is kept; a token is used once (deleted as it is used) and before it expires.
CREATE TABLE gateway_reset_tokens (
    hash       TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
CREATE INDEX gateway_reset_tokens_user ON gateway_reset_tokens (user_id);

-- Users who may not log in (`gateway users disable`): their tokens stop working too.
CREATE TABLE gateway_disabled_users (
    user_id     TEXT PRIMARY KEY,
    disabled_at TEXT NOT NULL
);
