-- Spend (issue 17): what requests with a key spent, summed by the gateway
-- between two heartbeats and added up here per gateway, proxy, key,
-- model and UTC day. `cost` is in the price table's currency (USD for the
-- shipped table).
CREATE TABLE spend (
    gateway_id TEXT NOT NULL,
    proxy_id TEXT NOT NULL,
    key_id TEXT NOT NULL,
    model TEXT NOT NULL,
    day TEXT NOT NULL,
    requests BIGINT NOT NULL,
    input_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    cost DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (gateway_id, proxy_id, key_id, model, day)
);
CREATE INDEX spend_day ON spend (day);
-- Spend batches already added, so one a gateway sends again (its
-- heartbeat's answer was lost) is added once.
CREATE TABLE spend_batches (
    gateway_id TEXT NOT NULL,
    batch_id TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (gateway_id, batch_id)
);
-- A key's scope (models, inbound formats, resources it may use), JSON;
-- NULL: everything its proxy offers.
ALTER TABLE api_keys ADD COLUMN scope TEXT;
