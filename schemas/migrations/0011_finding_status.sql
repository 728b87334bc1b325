-- A finding's review history (SPEC §9; pipeline/review/ladder.py): one row per verdict applied,
-- never an edit of the finding. The current status is the row with the highest seq per finding_id;
-- a finding with no row is open. status_key = finding_id/seq, so a re-applied verdict adds nothing.
CREATE TABLE IF NOT EXISTS {db}.finding_status
(
    status_key    String,
    finding_id    String,
    org_id        $LC(String),
    group_id      String,
    user_id       String,
    rule          $LC(String),
    seq           UInt32,
    ts            Int64,
    dt            DateTime DEFAULT toDateTime(intDiv(ts, 1000)),
    status        $LC(String),
    verdict       $LC(String),
    actor_id      String,
    note          String,
    feedback_id   String,
    src_topic     $LC(String),
    src_partition Int32,
    src_offset    Int64,
    src_index     UInt32
)
ENGINE = ReplacingMergeTree()
ORDER BY (org_id, finding_id, seq, status_key)
