-- Per image: current labels it is the source of, the distinct source points, and the fraction
-- of its foreground patches that carry at least one label.
-- plot: bar x=image_id y=coverage
SELECT l.run_id, l.category, l.src_image_id AS image_id,
       count(*) AS labels,
       count(DISTINCT (l.src_x, l.src_y)) AS points,
       any_value(i.n_fg) AS n_fg,
       round(count(DISTINCT (l.src_x, l.src_y)) / any_value(i.n_fg), 3) AS coverage
FROM labels l
JOIN images i ON i.run_id = l.run_id AND i.image_id = l.src_image_id
GROUP BY l.run_id, l.category, l.src_image_id
ORDER BY l.run_id, coverage, image_id;
