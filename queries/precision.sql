-- Precision against truth where it is known, by split, category and hops. Homographies (the planar
-- demo): the share of labels within 5% and 10% of the target image's longer side of the true
-- position. Part truth (a rendered collection): within 5% and 10% of the target object's box side,
-- a label whose source point is hidden in the target counting as wrong; hidden: the share of such
-- labels; mirror: of the labels from a left/right part, the share that land on its twin.
-- median_error is in those units.
-- plot: bar x=category y=p_10 hue=hops
WITH ends AS (
    SELECT l.run_id, l.category, l.hops, l.src_x, l.src_y, l.tgt_x, l.tgt_y,
           s.homography AS src_hom, t.homography AS tgt_hom, s.truth_uri AS src_truth, t.truth_uri AS tgt_truth,
           greatest(t.width, t.height) AS side,
           CASE WHEN s.split IS NOT DISTINCT FROM t.split THEN s.split ELSE 'mixed' END AS split
    FROM labels l
    JOIN images s ON s.run_id = l.run_id AND s.image_id = l.src_image_id
    JOIN images t ON t.run_id = l.run_id AND t.image_id = l.tgt_image_id
), by_homography AS (
    SELECT *, true_xy(src_hom, tgt_hom, src_x, src_y) AS truth FROM ends
    WHERE src_hom IS NOT NULL AND tgt_hom IS NOT NULL
), by_parts AS (  -- one call per image pair: its truth is read and judged once
    SELECT run_id, split, category, hops,
           unnest(part_truth(src_truth, tgt_truth, list(src_x), list(src_y), list(tgt_x), list(tgt_y))) AS verdict
    FROM ends
    WHERE src_truth IS NOT NULL AND tgt_truth IS NOT NULL
    GROUP BY run_id, split, category, hops, src_truth, tgt_truth
), judged AS (
    SELECT run_id, 'homography' AS truth, split, category, hops,
           sqrt((tgt_x - truth[1]) ^ 2 + (tgt_y - truth[2]) ^ 2) / side AS error,
           NULL::BOOLEAN AS hidden, NULL::BOOLEAN AS twin, NULL::BOOLEAN AS mirrored
    FROM by_homography
    UNION ALL
    SELECT run_id, 'parts', split, category, hops, verdict.error, verdict.hidden, verdict.twin, verdict.mirrored
    FROM by_parts
)
SELECT run_id, truth, split, category, hops, count(*) AS labels,
       round(avg(coalesce(error <= 0.05, false)::INT), 3) AS p_05,
       round(avg(coalesce(error <= 0.10, false)::INT), 3) AS p_10,
       round(avg(hidden::INT), 3) AS hidden,
       round(avg(mirrored::INT) FILTER (WHERE twin), 3) AS mirror,
       round(median(error), 4) AS median_error
FROM judged
GROUP BY ALL
ORDER BY run_id, truth, split, category, hops;
