-- Step checkpoints of jobs' runs (resumable runs): a step whose effect is outside the
-- database (an outbound call, an e-mail) is written here once it succeeds, in a transaction
-- of its own, so that a retried run of its job restores its result instead of doing it
-- again. `place` is the step's number in its workflow (`3`), or a path through the custom
-- events called inline (`3.2`); `action` and `step_id` tell a changed definition; `kept` is
-- false for a result too large to keep, whose step runs again. Purged with the run log's
-- retention.
CREATE TABLE gateway_job_steps (
    job_id  text NOT NULL,
    place   text NOT NULL,
    action  text NOT NULL,
    step_id text NOT NULL,
    run_id  text NOT NULL,
    at      timestamptz NOT NULL,
    kept    boolean NOT NULL,
    result  jsonb,
    PRIMARY KEY (job_id, place)
);
