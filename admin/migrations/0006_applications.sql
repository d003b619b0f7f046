-- Consumers (issue 17): applications own keys and subscribe to proxies
-- under a plan. A plan belongs to a proxy and says which models its
-- subscribers may call and whether a subscription waits for approval.
-- Keys of an application work on the proxies it is actively subscribed
-- to, and only there (admin sends them to those proxies' gateways, scoped
-- to the plan's models).
CREATE TABLE applications (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    description TEXT,
    owner_team TEXT,
    owner_token TEXT,
    created_at BIGINT NOT NULL
);
CREATE TABLE plans (
    id TEXT PRIMARY KEY,
    proxy_id TEXT NOT NULL,
    name TEXT NOT NULL,
    -- JSON array of model patterns; empty: every model of the proxy.
    models TEXT NOT NULL,
    needs_approval BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (proxy_id, name)
);
CREATE TABLE subscriptions (
    id TEXT PRIMARY KEY,
    application_id TEXT NOT NULL,
    proxy_id TEXT NOT NULL,
    plan_id TEXT NOT NULL,
    -- pending, active, suspended or closed
    status TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX subscriptions_application ON subscriptions (application_id);
CREATE INDEX subscriptions_proxy ON subscriptions (proxy_id);
CREATE TABLE application_keys (
    id TEXT PRIMARY KEY,
    application_id TEXT NOT NULL,
    name TEXT NOT NULL,
    prefix TEXT NOT NULL,
    key_sha256 TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    revoked_at BIGINT,
    last_used_at BIGINT
);
CREATE INDEX application_keys_application ON application_keys (application_id);
