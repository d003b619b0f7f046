-- Spend by the UTC hour admin received it, for usage over the last hours
-- (the web console's charts; GET /spend?group_by=hour). The same counters
-- as `spend`, plus the hour: a heartbeat carries at most a few seconds of
-- traffic, so the hour it arrives in is the hour the requests ran in,
-- but for those that straddle an hour boundary. Kept eight days.
CREATE TABLE spend_hours (
    gateway_id TEXT NOT NULL,
    proxy_id TEXT NOT NULL,
    key_id TEXT NOT NULL,
    model TEXT NOT NULL,
    day TEXT NOT NULL,
    hour TEXT NOT NULL,
    requests BIGINT NOT NULL,
    input_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    cost DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (gateway_id, proxy_id, key_id, model, hour)
);
CREATE INDEX spend_hours_hour ON spend_hours (hour);
