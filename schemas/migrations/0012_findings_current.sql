-- Every finding with its current review status: what the security team works from. The open
-- findings are those with status 'open' or 'appealed'; withdrawn ones have 'false_positive'.
CREATE VIEW IF NOT EXISTS {db}.findings_current AS
SELECT f.*, if(s.finding_id = '', 'open', s.status) AS status, s.actor_id AS decided_by, s.ts AS decided_at
FROM (SELECT * FROM {db}.findings FINAL) AS f
LEFT JOIN
(
    SELECT finding_id, argMax(status, seq) AS status, argMax(actor_id, seq) AS actor_id, max(ts) AS ts
    FROM {db}.finding_status FINAL
    GROUP BY finding_id
) AS s USING (finding_id)
