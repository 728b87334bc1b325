-- Answers to notices with their delay; late = after the deadline.
CREATE TABLE IF NOT EXISTS {db}.responses
(
    response_key  String,
    notice_id     String,
    org_id        $LC(String),
    group_id      String,
    user_id       String,
    msg_id        String,
    ts            Int64,
    dt            DateTime DEFAULT toDateTime(intDiv(ts, 1000)),
    delay_ms      Int64,
    late          UInt8,
    how           $LC(String),
    src_topic     $LC(String),
    src_partition Int32,
    src_offset    Int64,
    src_index     UInt32
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(dt)
ORDER BY (org_id, group_id, ts, response_key)
