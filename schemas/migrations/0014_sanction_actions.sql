-- Every attempt of `qunguard bridge onebot` to carry out a sanction on the platform
-- (pipeline/adapters/enforce.py): the OneBot action (set_group_ban, set_group_kick, delete_msg),
-- its params, and the platform's reply. status: ok, retry (failed, tried again), failed (given up
-- after enforcement.retry_seconds; logged as an error). Only groups whose policy enables
-- enforcement get actions; elsewhere the sanction stays a proposal to the owner.
CREATE TABLE IF NOT EXISTS {db}.sanction_actions
(
    action_id     String,
    finding_id    String,
    org_id        $LC(String),
    group_id      String,
    user_id       String,
    action        $LC(String),
    params        String,
    attempt       UInt32,
    at            Int64,
    dt            DateTime DEFAULT toDateTime(intDiv(at, 1000)),
    status        $LC(String),
    retcode       Int64,
    reply         String,
    error         String
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(dt)
ORDER BY (org_id, group_id, at, action_id, attempt)
