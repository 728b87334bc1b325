-- Reviewed content findings beside the message they were made on: labelled examples for the
-- content classifier (SPEC §9, "learning from verdicts"). label 1: confirmed, 0: a false positive.
CREATE VIEW IF NOT EXISTS {db}.labelled_examples AS
SELECT c.org_id AS org_id, c.rule AS rule, c.finding_id AS finding_id, m.text AS text,
       if(c.status = 'confirmed', 1, 0) AS label, c.decided_by AS decided_by, c.decided_at AS decided_at
FROM {db}.findings_current AS c
INNER JOIN (SELECT org_id, group_id, msg_id, any(text) AS text FROM {db}.messages GROUP BY org_id, group_id, msg_id) AS m
    ON c.org_id = m.org_id AND c.group_id = m.group_id AND c.msg_id = m.msg_id
WHERE c.rule LIKE 'content.%' AND c.status IN ('confirmed', 'false_positive')
