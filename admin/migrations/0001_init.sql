-- Portcullis admin schema. Runs unchanged on SQLite and Postgres: only
-- TEXT and BIGINT columns (booleans are 0/1, times are Unix milliseconds,
-- documents are JSON text), no autoincrement, no driver-specific types.

-- One row, `generation`: bumped by every mutation. It orders events
-- (providers' "most recently updated", deployment history, the audit log)
-- strictly, and lets waiting gateways notice a change with one cheap read.
CREATE TABLE meta (
    k TEXT PRIMARY KEY,
    v BIGINT NOT NULL
);
INSERT INTO meta (k, v) VALUES ('generation', 0);

CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    token_sha256 TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);

CREATE TABLE providers (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    -- Non-secret settings (base_url, models, region, versions) as JSON.
    spec TEXT NOT NULL,
    -- Credentials as JSON, sealed with the data key (nonce || ciphertext, base64).
    credentials TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    updated_seq BIGINT NOT NULL
);

CREATE TABLE proxies (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    current_revision BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Immutable: a change to a proxy inserts a new revision.
CREATE TABLE proxy_revisions (
    proxy_id TEXT NOT NULL,
    revision BIGINT NOT NULL,
    spec TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    PRIMARY KEY (proxy_id, revision)
);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    proxy_id TEXT NOT NULL,
    name TEXT NOT NULL,
    prefix TEXT NOT NULL,
    key_sha256 TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    revoked_at BIGINT,
    last_used_at BIGINT
);
CREATE INDEX api_keys_proxy ON api_keys (proxy_id);

CREATE TABLE gateways (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    url TEXT NOT NULL,
    token_sha256 TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    last_seen_at BIGINT,
    config_version TEXT,
    proxies_served BIGINT NOT NULL DEFAULT 0,
    last_error TEXT,
    last_error_at BIGINT
);

CREATE TABLE deployments (
    id TEXT PRIMARY KEY,
    proxy_id TEXT NOT NULL,
    gateway_id TEXT NOT NULL,
    revision BIGINT NOT NULL,
    -- The revision's base path, copied so conflicts are one indexed query.
    context TEXT NOT NULL,
    status TEXT NOT NULL,
    deployed_at BIGINT NOT NULL,
    stopped_at BIGINT,
    seq BIGINT NOT NULL
);
CREATE INDEX deployments_gateway ON deployments (gateway_id, status);
CREATE INDEX deployments_proxy ON deployments (proxy_id, seq);

CREATE TABLE audit_log (
    id TEXT PRIMARY KEY,
    seq BIGINT NOT NULL,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    resource TEXT NOT NULL,
    detail TEXT
);
CREATE INDEX audit_log_seq ON audit_log (seq);
