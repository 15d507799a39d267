-- The labels of image pairs, for drawing as lines (param=[run=...,category=...,src=...,tgt=...];
-- default: the farthest pair with the most labels in the latest committed run that holds current
-- labels, of any category; a named run shows all the labels it made; src=* or tgt=* takes every
-- one), judged where truth is known as `precision` judges them: error in the target's longer side
-- (homography) or its object's box side (part truth), correct within 0.05, a point hidden in the
-- target counting as wrong.
-- plot: pairs
WITH pick_run AS (
    SELECT coalesce(getvariable('run'), (SELECT run_id FROM runs WHERE run_id IN (SELECT run_id FROM current_pairs WHERE labels > 0)
                                            ORDER BY finished DESC LIMIT 1)) AS run_id
), best AS (
    SELECT src_image_id, tgt_image_id FROM label_history
    WHERE run_id = (SELECT run_id FROM pick_run) AND category = coalesce(getvariable('category'), category)
    GROUP BY ALL ORDER BY max(hops) DESC, count(*) DESC, src_image_id, tgt_image_id LIMIT 1
), chosen AS (
    SELECT l.*, s.uri AS src_uri, t.uri AS tgt_uri, greatest(t.width, t.height) AS side,
           CASE WHEN s.homography IS NOT NULL AND t.homography IS NOT NULL
                THEN true_xy(s.homography, t.homography, l.src_x, l.src_y) END AS true_tgt,
           s.truth_uri AS src_truth, t.truth_uri AS tgt_truth, row_number() OVER () AS label_no
    FROM label_history l
    JOIN images s ON s.run_id = l.run_id AND s.image_id = l.src_image_id
    JOIN images t ON t.run_id = l.run_id AND t.image_id = l.tgt_image_id
    WHERE l.run_id = (SELECT run_id FROM pick_run) AND l.category = coalesce(getvariable('category'), l.category)
      AND (getvariable('src') = '*' OR l.src_image_id = coalesce(getvariable('src'), (SELECT src_image_id FROM best)))
      AND (getvariable('tgt') = '*' OR l.tgt_image_id = coalesce(getvariable('tgt'), (SELECT tgt_image_id FROM best)))
), by_parts AS (  -- one call per image pair: its truth is read and judged once
    SELECT unnest(list(label_no ORDER BY label_no)) AS label_no,
           unnest(part_truth(src_truth, tgt_truth, list(src_x ORDER BY label_no), list(src_y ORDER BY label_no),
                             list(tgt_x ORDER BY label_no), list(tgt_y ORDER BY label_no))) AS verdict
    FROM chosen
    WHERE true_tgt IS NULL AND src_truth IS NOT NULL AND tgt_truth IS NOT NULL
    GROUP BY src_image_id, tgt_image_id, src_truth, tgt_truth
), judged AS (
    SELECT c.*, p.verdict.hidden AS hidden,
           coalesce(sqrt((c.tgt_x - c.true_tgt[1]) ^ 2 + (c.tgt_y - c.true_tgt[2]) ^ 2) / c.side, p.verdict.error) AS error,
           CASE WHEN c.true_tgt IS NOT NULL THEN 'homography' WHEN p.label_no IS NOT NULL THEN 'parts' END AS truth
    FROM chosen c LEFT JOIN by_parts p USING (label_no)
)
SELECT run_id, category, src_image_id, tgt_image_id, src_uri, tgt_uri, src_x, src_y, tgt_x, tgt_y,
       hops, cycle_error, similarity, support, confidence, truth, error, hidden,
       CASE WHEN truth IS NOT NULL THEN coalesce(error <= 0.05, false) END AS correct
FROM judged
ORDER BY src_image_id, tgt_image_id, src_y, src_x;
