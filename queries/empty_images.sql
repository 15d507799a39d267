-- Images of committed runs that are in no current label (as source or target), and why they may
-- not be: no pose, no foreground, or in no tuple of any run; bad inputs are in the bad_inputs report.
WITH seen AS (  -- each image once, over every committed run that saw it
    SELECT i.image_id, any_value(i.category) AS category, any_value(i.azimuth) AS azimuth, max(i.n_fg) AS n_fg,
           max(i.run_id) AS last_run
    FROM images i JOIN runs r USING (run_id) WHERE r.status = 'committed'
    GROUP BY i.image_id
), labelled AS (SELECT src_image_id AS image_id FROM labels UNION SELECT tgt_image_id FROM labels)
SELECT s.last_run, s.category, s.image_id, s.azimuth, s.n_fg,
       CASE WHEN s.azimuth IS NULL THEN 'no azimuth: takes part in no tuple'
            WHEN s.n_fg IS NULL THEN 'in no tuple: too few pose bins in its category'
            WHEN s.n_fg = 0 THEN 'no foreground patch'
            ELSE 'every chain through it failed the cycle check' END AS likely_reason
FROM seen s
WHERE s.image_id NOT IN (SELECT image_id FROM labelled)
ORDER BY s.category, s.image_id;
