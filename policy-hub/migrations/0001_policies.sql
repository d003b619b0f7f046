-- Policy hub schema. Portable SQL: the same file runs on SQLite and
-- Postgres (BIGINT for integers and booleans, TEXT for JSON and times,
-- BYTEA for module bytes: Postgres's name, which SQLite accepts and
-- stores blobs under unchanged).

-- Module bytes, content-addressed: two versions with the same component
-- share one row.
CREATE TABLE hub_modules (
    digest TEXT PRIMARY KEY,          -- 'sha256:<hex>'
    size BIGINT NOT NULL,
    content BYTEA NOT NULL
);

-- One row per policy name; latest_version is the highest non-yanked
-- version (stable before pre-release), recomputed in the transaction that
-- publishes or yanks, so listings are one indexed join. NULL when every
-- version is yanked: the policy then disappears from listings.
CREATE TABLE hub_policies (
    name TEXT PRIMARY KEY,
    owner TEXT NOT NULL,              -- the first publisher; only it (or admin) adds versions
    latest_version TEXT,
    created_at TEXT NOT NULL
);

CREATE TABLE hub_policy_versions (
    name TEXT NOT NULL REFERENCES hub_policies (name),
    version TEXT NOT NULL,
    category TEXT NOT NULL,
    display_name TEXT NOT NULL,
    description TEXT NOT NULL,
    phases TEXT NOT NULL,             -- JSON array
    capabilities TEXT NOT NULL,       -- JSON array, e.g. ["counters","log"]
    settings_schema TEXT NOT NULL,    -- JSON
    default_settings TEXT NOT NULL,   -- JSON
    docs TEXT NOT NULL,
    digest TEXT NOT NULL REFERENCES hub_modules (digest),
    size BIGINT NOT NULL,
    publisher TEXT NOT NULL,
    published_at TEXT NOT NULL,       -- RFC 3339 UTC
    yanked BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (name, version)
);

CREATE INDEX hub_policy_versions_category ON hub_policy_versions (category);
