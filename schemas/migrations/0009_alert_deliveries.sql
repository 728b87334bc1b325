-- Every attempt of `qunguard notifier` to deliver an alert (pipeline/alerting/notifier.py): when,
-- to which channel, with what outcome. status: sent, retry (the platform said too fast, or the
-- channel was down), config_error (bad key or signature: not retried), dead (given up; the alert
-- is on qg.deadletter). `message_id` names the message that carried it (a digest carries several).
CREATE TABLE IF NOT EXISTS {db}.alert_deliveries
(
    attempt_id    String,
    alert_id      String,
    channel       $LC(String),
    org_id        $LC(String),
    attempt       UInt32,
    at            Int64,
    dt            DateTime DEFAULT toDateTime(intDiv(at, 1000)),
    status        $LC(String),
    error         String,
    latency_ms    Int64,
    message_id    String
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(dt)
ORDER BY (org_id, channel, at, attempt_id)
