-- Input that failed to parse or validate, with the raw bytes (base64 when not UTF-8) and why.
CREATE TABLE IF NOT EXISTS {db}.deadletter
(
    dl_id         String,
    error         String,
    raw           String $CODEC(ZSTD(3)),
    raw_encoding  $LC(String),
    src_topic     $LC(String),
    src_partition Int32,
    src_offset    Int64,
    src_index     UInt32,
    received_at   DateTime DEFAULT now()
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(received_at)
ORDER BY (src_topic, src_partition, src_offset, src_index)
