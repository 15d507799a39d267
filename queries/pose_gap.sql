-- Labels by pose gap: chain distance (hops) and azimuth difference of the two images.
-- plot: bar x=azimuth_gap y=labels_per_pair hue=run_id
SELECT l.run_id, l.hops,
       round(abs(((s.azimuth - t.azimuth + 540) % 360) - 180)) AS azimuth_gap,
       count(DISTINCT (l.src_image_id, l.tgt_image_id)) AS image_pairs,
       count(*) AS labels,
       round(count(*) / count(DISTINCT (l.src_image_id, l.tgt_image_id)), 1) AS labels_per_pair,
       round(avg(l.cycle_error), 2) AS mean_cycle_error_px,
       round(avg(l.similarity), 3) AS mean_similarity
FROM labels l
JOIN images s ON s.run_id = l.run_id AND s.image_id = l.src_image_id
JOIN images t ON t.run_id = l.run_id AND t.image_id = l.tgt_image_id
GROUP BY ALL
ORDER BY l.run_id, l.hops, azimuth_gap;
