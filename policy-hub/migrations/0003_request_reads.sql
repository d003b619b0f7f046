-- What a policy's request phase reads of the request besides the fields
-- always given (manifest `request_reads`, a JSON array of `messages`,
-- `headers`, `raw`). NULL: everything, as the gateway gave every version
-- published before.
ALTER TABLE hub_policy_versions ADD COLUMN request_reads TEXT;
