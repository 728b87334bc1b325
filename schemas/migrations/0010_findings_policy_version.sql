-- The short hash of the effective policy that decided a finding (SPEC §3; Policy.version).
ALTER TABLE {db}.findings ADD COLUMN policy_version $LC(String) DEFAULT '' AFTER evidence
