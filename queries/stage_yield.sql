-- Kept fraction at each filter stage: foreground seeds, survivors of the cycle check after
-- each hop, labels composed over all ordered pairs, within the pose-gap cap (candidates), kept
-- by the vote, by the pair check, by the confidence ranking (labels.keep), then by the spherical
-- filter (when the run used one).
-- plot: bar x=stage y=kept_of_seeds hue=run_id
WITH kv AS (
    SELECT run_id, unnest(json_keys(counts)) AS stage, counts FROM runs WHERE status = 'committed'
), stages AS (
    SELECT run_id, stage, (counts->>stage)::BIGINT AS n,
           CASE WHEN stage = 'seeds' THEN 0 WHEN stage = 'composed' THEN 99 WHEN stage = 'candidates' THEN 100
                WHEN stage = 'voted' THEN 101 WHEN stage = 'after_pair_check' THEN 102
                WHEN stage = 'confident' THEN 103 WHEN stage = 'labels' THEN 104 ELSE replace(stage, 'after_hop', '')::INT END AS step
    FROM kv WHERE stage IN ('seeds', 'composed', 'candidates', 'voted', 'after_pair_check', 'confident', 'labels') OR stage LIKE 'after_hop%'
)
SELECT run_id, stage, n,
       round(n / max(n) FILTER (WHERE stage = 'seeds') OVER (PARTITION BY run_id), 3) AS kept_of_seeds,
       round(n / lag(n) OVER (PARTITION BY run_id ORDER BY step), 3) AS kept_of_previous
FROM stages
ORDER BY run_id, step;
