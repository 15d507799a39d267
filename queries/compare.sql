-- One run against another (param=[a=RUN,b=RUN]; default: the two latest committed), each
-- with all the labels it made (label_history): labels per category in each, labels in both
-- (same pair and pixels), and only in one.
-- plot: bar x=category y=shared
WITH latest AS (
    SELECT run_id, row_number() OVER (ORDER BY finished DESC) AS k FROM runs WHERE status = 'committed'
), pick AS (
    SELECT coalesce(getvariable('a'), (SELECT run_id FROM latest WHERE k = 2)) AS a,
           coalesce(getvariable('b'), (SELECT run_id FROM latest WHERE k = 1)) AS b
), la AS (SELECT * FROM label_history WHERE run_id = (SELECT a FROM pick)),
   lb AS (SELECT * FROM label_history WHERE run_id = (SELECT b FROM pick)),
   joined AS (
    SELECT coalesce(la.category, lb.category) AS category, la.run_id IS NOT NULL AS in_a, lb.run_id IS NOT NULL AS in_b
    FROM la FULL OUTER JOIN lb USING (category, src_image_id, tgt_image_id, src_x, src_y, tgt_x, tgt_y)
)
SELECT (SELECT a FROM pick) AS run_a, (SELECT b FROM pick) AS run_b, category,
       count(*) FILTER (WHERE in_a) AS labels_a, count(*) FILTER (WHERE in_b) AS labels_b,
       count(*) FILTER (WHERE in_a AND in_b) AS shared,
       count(*) FILTER (WHERE in_a AND NOT in_b) AS only_a, count(*) FILTER (WHERE in_b AND NOT in_a) AS only_b
FROM joined
GROUP BY category
ORDER BY category;
