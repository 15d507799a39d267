-- Distribution of the cycle error (pixels, 1-px bins) per run.
-- plot: bar x=cycle_error_px y=labels hue=run_id
SELECT run_id, floor(cycle_error)::INT AS cycle_error_px, count(*) AS labels,
       round(count(*) / sum(count(*)) OVER (PARTITION BY run_id), 4) AS fraction
FROM labels
GROUP BY 1, 2
ORDER BY run_id, cycle_error_px;
