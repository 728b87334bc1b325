-- Every valid event of every kind, as received (payload = the validated event as JSON).
-- ReplacingMergeTree on the identity: the sink already refuses to write an event twice, and a
-- merge collapses any duplicate that slips past it (SELECT ... FINAL gives the exact view).
CREATE TABLE IF NOT EXISTS {db}.raw_events
(
    event_id      String,
    kind          $LC(String),
    org_id        $LC(String),
    group_id      String,
    user_id       String,
    ts            Int64,
    dt            DateTime DEFAULT toDateTime(intDiv(ts, 1000)),
    payload       String $CODEC(ZSTD(3)),
    src_topic     $LC(String),
    src_partition Int32,
    src_offset    Int64,
    src_index     UInt32,
    ingested_at   DateTime DEFAULT now()
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(dt)
ORDER BY (org_id, kind, group_id, ts, event_id)
