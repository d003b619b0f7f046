-- What a policy's complete phase reads of the answer ('whole' or
-- 'usage'; manifest `complete_reads`). Versions published before default
-- to 'whole', which is what the gateway assumed of them.
ALTER TABLE hub_policy_versions ADD COLUMN complete_reads TEXT NOT NULL DEFAULT 'whole';
