-- Labels per run and category: how many, over how many image pairs, and their quality.
-- plot: bar x=category y=labels hue=run_id
SELECT run_id, category,
       count(*) AS labels,
       count(DISTINCT (src_image_id, tgt_image_id)) AS image_pairs,
       round(count(*) / count(DISTINCT (src_image_id, tgt_image_id)), 1) AS labels_per_pair,
       round(avg(cycle_error), 2) AS mean_cycle_error_px,
       round(avg(similarity), 3) AS mean_similarity,
       round(avg(support), 2) AS mean_support
FROM labels
GROUP BY run_id, category
ORDER BY run_id, category;
