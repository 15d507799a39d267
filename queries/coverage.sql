-- Per category: the images of committed runs that could take part in a tuple (they have a pose,
-- or their category is paired by similarity, and features), how many of them are the source of
-- at least one current label, and that share; the runs' own figure is runs.counts->>'coverage'.
-- Where poses and masks came from: given, estimated (pose used), estimated too unsure to use
-- (those images paired by feature similarity, with no pose-gap cap), masks estimated.
-- plot: bar x=category y=coverage
WITH seen AS (  -- each image once, as the latest run that saw it left it
    SELECT i.* FROM images i JOIN runs r USING (run_id) WHERE r.status = 'committed'
    QUALIFY row_number() OVER (PARTITION BY i.image_id ORDER BY r.snapshot DESC) = 1
), bad AS (SELECT DISTINCT image_id FROM bad_inputs),
   sources AS (SELECT DISTINCT src_image_id AS image_id FROM labels)
SELECT s.category, count(*) AS pairable,
       count(*) FILTER (WHERE s.image_id IN (SELECT image_id FROM sources)) AS sources,
       round(count(*) FILTER (WHERE s.image_id IN (SELECT image_id FROM sources)) / count(*), 3) AS coverage,
       count(*) FILTER (WHERE s.pose_source = 'given' OR s.pose_source IS NULL AND s.azimuth IS NOT NULL) AS pose_given,
       count(*) FILTER (WHERE s.pose_source LIKE 'estimated%' AND s.azimuth IS NOT NULL) AS pose_estimated,
       count(*) FILTER (WHERE s.azimuth IS NULL) AS pose_none,
       count(*) FILTER (WHERE s.mask_source IS NOT NULL AND s.mask_source <> 'given') AS masks_estimated
FROM seen s
WHERE s.image_id NOT IN (SELECT image_id FROM bad)
GROUP BY s.category
ORDER BY s.category;
