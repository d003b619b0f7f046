-- Scopes, quotas and budgets on plans (issue 17). A plan may restrict the
-- client formats and resources its subscribers use (JSON arrays, as in key
-- scopes; empty: all), beside its models. It may limit tokens and
-- requests per window (token-rate-limit's `limits`) and spend per period
-- (budget's `budgets`), per subscription. `attachments` holds the policy
-- attachments that enforce them, resolved against the hub when the plan
-- was written (name, version, pinned sha256, settings); admin sends them
-- with the proxy, limited to the plan's subscribers.
ALTER TABLE plans ADD COLUMN limits TEXT NOT NULL DEFAULT '[]';
ALTER TABLE plans ADD COLUMN budgets TEXT NOT NULL DEFAULT '[]';
ALTER TABLE plans ADD COLUMN attachments TEXT NOT NULL DEFAULT '[]';
ALTER TABLE plans ADD COLUMN inbound TEXT NOT NULL DEFAULT '[]';
ALTER TABLE plans ADD COLUMN resources TEXT NOT NULL DEFAULT '[]';
