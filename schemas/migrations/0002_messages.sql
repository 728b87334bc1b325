-- Chat messages with their jieba tokens, for the dashboards.
CREATE TABLE IF NOT EXISTS {db}.messages
(
    event_id      String,
    org_id        $LC(String),
    platform      $LC(String),
    group_id      String,
    msg_id        String,
    sender_id     String,
    sender_name   String,
    sender_role   $LC(String),
    msg_type      $LC(String),
    text          String $CODEC(ZSTD(3)),
    tokens        Array(String),
    reply_to      String,
    mentions      Array(String),
    urls          Array(String),
    file_name     String,
    extra         String,
    ts            Int64,
    dt            DateTime DEFAULT toDateTime(intDiv(ts, 1000)),
    src_topic     $LC(String),
    src_partition Int32,
    src_offset    Int64,
    src_index     UInt32
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(dt)
ORDER BY (org_id, group_id, ts, event_id)
