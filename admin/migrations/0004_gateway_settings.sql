-- Gateway settings (issue 15): what a managed gateway takes from admin
-- besides its proxies (TLS, Redis, OTLP, timeouts, limits, provider CA
-- bundles, policy engine limits), per gateway (`gateway:<id>`) or per
-- group of gateways (`group:<name>`). `settings` is the JSON without its
-- secrets; `secrets` (TLS keys, the Redis URL) is sealed like provider
-- credentials.
CREATE TABLE gateway_settings (
    scope TEXT PRIMARY KEY,
    settings TEXT NOT NULL,
    secrets TEXT,
    updated_at BIGINT NOT NULL
);
ALTER TABLE gateways ADD COLUMN group_name TEXT;
-- The settings a gateway reported it applies only at its next restart
-- (JSON array of field names; NULL when none).
ALTER TABLE gateways ADD COLUMN restart_required TEXT;
