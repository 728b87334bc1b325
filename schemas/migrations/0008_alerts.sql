-- Alerts as the worker decided them (pipeline/alerting/): one row per alert and channel. alert_id
-- is deterministic (replay computes the same), so a re-fired timer never adds a second row.
CREATE TABLE IF NOT EXISTS {db}.alerts
(
    alert_id      String,
    kind          $LC(String),
    channel       $LC(String),
    org_id        $LC(String),
    group_id      String,
    rule          $LC(String),
    severity      $LC(String),
    ts            Int64,
    dt            DateTime DEFAULT toDateTime(intDiv(ts, 1000)),
    count         UInt32,
    repeats       UInt32,
    finding_ids   Array(String),
    payload       String,
    src_topic     $LC(String),
    src_partition Int32,
    src_offset    Int64,
    src_index     UInt32
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(dt)
ORDER BY (org_id, ts, alert_id)
