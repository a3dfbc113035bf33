-- Rate limits per agent: requests and tokens a minute across all of the
-- agent's keys (0: none), enforced by the proxy from the snapshot (every
-- key of the agent carries them). agents bumps state_version (008), so a
-- change republishes at once.

ALTER TABLE agents ADD COLUMN IF NOT EXISTS rpm_limit bigint NOT NULL
    DEFAULT 0 CHECK (rpm_limit BETWEEN 0 AND 4294967295);
ALTER TABLE agents ADD COLUMN IF NOT EXISTS tpm_limit bigint NOT NULL
    DEFAULT 0 CHECK (tpm_limit BETWEEN 0 AND 4294967295);
