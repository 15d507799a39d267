-- Images of committed runs that yield no label (as source or target), and why they may not:
-- no pose, no foreground, or no tuple; bad inputs are in the bad_inputs report.
SELECT i.run_id, i.category, i.image_id, i.azimuth, i.n_fg,
       CASE WHEN i.azimuth IS NULL THEN 'no azimuth: takes part in no tuple'
            WHEN i.n_fg IS NULL THEN 'in no tuple: too few pose bins in its category'
            WHEN i.n_fg = 0 THEN 'no foreground patch'
            ELSE 'every chain through it failed the cycle check' END AS likely_reason
FROM images i
WHERE NOT EXISTS (
    SELECT 1 FROM labels l
    WHERE l.run_id = i.run_id AND (l.src_image_id = i.image_id OR l.tgt_image_id = i.image_id))
ORDER BY i.run_id, i.category, i.image_id;
