-- Every claim of a job counted, never reset (a retry resets `attempt`, a release takes one
-- back): a job's run ends its job only while the job is still the claim the run was
-- started by, and this count tells one claim from every other.
ALTER TABLE gateway_jobs ADD COLUMN claims INTEGER NOT NULL DEFAULT 0;
