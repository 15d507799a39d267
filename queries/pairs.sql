-- The labels of one image pair, for drawing as lines (param=[run=...,src=...,tgt=...]; default: the
-- farthest pair with the most labels in the latest committed run that holds current labels; a
-- named run shows all the labels it made), judged where truth is known.
-- plot: pairs
WITH pick_run AS (
    SELECT coalesce(getvariable('run'), (SELECT run_id FROM runs WHERE run_id IN (SELECT run_id FROM current_pairs WHERE labels > 0)
                                            ORDER BY finished DESC LIMIT 1)) AS run_id
), best AS (
    SELECT src_image_id, tgt_image_id FROM label_history WHERE run_id = (SELECT run_id FROM pick_run)
    GROUP BY ALL ORDER BY max(hops) DESC, count(*) DESC, src_image_id, tgt_image_id LIMIT 1
)
SELECT l.run_id, l.src_image_id, l.tgt_image_id, s.uri AS src_uri, t.uri AS tgt_uri,
       l.src_x, l.src_y, l.tgt_x, l.tgt_y, l.hops, l.cycle_error, l.similarity, l.support,
       CASE WHEN s.homography IS NULL OR t.homography IS NULL THEN NULL
            ELSE sqrt((l.tgt_x - true_xy(s.homography, t.homography, l.src_x, l.src_y)[1]) ^ 2
                    + (l.tgt_y - true_xy(s.homography, t.homography, l.src_x, l.src_y)[2]) ^ 2)
                 <= 0.05 * greatest(t.width, t.height) END AS correct
FROM label_history l
JOIN images s ON s.run_id = l.run_id AND s.image_id = l.src_image_id
JOIN images t ON t.run_id = l.run_id AND t.image_id = l.tgt_image_id
WHERE l.run_id = (SELECT run_id FROM pick_run)
  AND l.src_image_id = coalesce(getvariable('src'), (SELECT src_image_id FROM best))
  AND l.tgt_image_id = coalesce(getvariable('tgt'), (SELECT tgt_image_id FROM best))
ORDER BY l.src_y, l.src_x;
