-- Rule findings (SPEC §3); finding_id is deterministic, so a replay never adds a second row.
CREATE TABLE IF NOT EXISTS {db}.findings
(
    finding_id    String,
    rule          $LC(String),
    severity      $LC(String),
    org_id        $LC(String),
    group_id      String,
    msg_id        String,
    user_id       String,
    ts            Int64,
    dt            DateTime DEFAULT toDateTime(intDiv(ts, 1000)),
    evidence      String,
    src_topic     $LC(String),
    src_partition Int32,
    src_offset    Int64,
    src_index     UInt32
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(dt)
ORDER BY (org_id, rule, ts, finding_id)
