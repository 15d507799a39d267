-- Precision against truth where it is known (the demo's homographies): the fraction of labels
-- within 5% and 10% of the target image's longer side of the true position, by hops.
-- plot: bar x=category y=p_05 hue=hops
WITH judged AS (
    SELECT l.run_id, l.category, l.hops,
           true_xy(s.homography, t.homography, l.src_x, l.src_y) AS truth,
           greatest(t.width, t.height) AS side, l.tgt_x, l.tgt_y
    FROM labels l
    JOIN images s ON s.run_id = l.run_id AND s.image_id = l.src_image_id
    JOIN images t ON t.run_id = l.run_id AND t.image_id = l.tgt_image_id
    WHERE s.homography IS NOT NULL AND t.homography IS NOT NULL
), err AS (
    SELECT *, sqrt((tgt_x - truth[1]) ^ 2 + (tgt_y - truth[2]) ^ 2) AS err FROM judged
)
SELECT run_id, category, hops, count(*) AS labels,
       round(avg((err <= 0.05 * side)::INT), 3) AS p_05,
       round(avg((err <= 0.10 * side)::INT), 3) AS p_10,
       round(median(err), 2) AS median_error_px
FROM err
GROUP BY ALL
ORDER BY run_id, category, hops;
