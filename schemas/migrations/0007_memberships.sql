-- Each person's standing in each group, one row per change (membership rules,
-- pipeline/detectors/governance/member.py): the current standing is the row with the highest seq
-- per (org_id, group_id, user_id). `qunguard audit members` reads it.
CREATE TABLE IF NOT EXISTS {db}.memberships
(
    membership_key String,
    org_id         $LC(String),
    group_id       String,
    user_id        String,
    seq            UInt64,
    ts             Int64,
    dt             DateTime DEFAULT toDateTime(intDiv(ts, 1000)),
    present        UInt8,
    nickname       String,
    name           String,
    department     String,
    status         $LC(String),
    nickname_bad   UInt8,
    departed       UInt8,
    external       UInt8,
    src_topic      $LC(String),
    src_partition  Int32,
    src_offset     Int64,
    src_index      UInt32
)
ENGINE = ReplacingMergeTree()
ORDER BY (org_id, group_id, user_id, seq, membership_key)
