-- Password reset tokens (`send_password_reset_email`, `reset_password`): only a SHA-256 of
-- each token is kept; a token is used once (deleted as it is used) and before it expires.
CREATE TABLE gateway_reset_tokens (
    hash       text PRIMARY KEY,
    user_id    text NOT NULL,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX gateway_reset_tokens_user ON gateway_reset_tokens (user_id);

-- Users who may not log in (`gateway users disable`): their tokens stop working too.
CREATE TABLE gateway_disabled_users (
    user_id     text PRIMARY KEY,
    disabled_at timestamptz NOT NULL
);
