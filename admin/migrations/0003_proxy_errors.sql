-- Failure isolation (issue 12): a managed gateway leaves out the proxies
-- it cannot load and reports them in its heartbeat; admin keeps the last
-- report (JSON array of {proxy_id, field, message}; NULL when none) and
-- shows those deployments as Failed with the reason.
ALTER TABLE gateways ADD COLUMN proxy_errors TEXT;
