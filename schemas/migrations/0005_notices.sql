-- Notices that ask for a reply, and the answers to them with their delays: answer rates and
-- median answer times per group and member (deadline rules, pipeline/detectors/deadline/).
CREATE TABLE IF NOT EXISTS {db}.notices
(
    notice_key    String,
    notice_id     String,
    org_id        $LC(String),
    group_id      String,
    sender_id     String,
    ts            Int64,
    dt            DateTime DEFAULT toDateTime(intDiv(ts, 1000)),
    due           Int64,
    basis         String,
    responders    UInt32,
    text          String,
    src_topic     $LC(String),
    src_partition Int32,
    src_offset    Int64,
    src_index     UInt32
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(dt)
ORDER BY (org_id, group_id, ts, notice_key)
