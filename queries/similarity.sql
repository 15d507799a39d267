-- Distribution of the label similarity (cosine, 0.05 bins) per run.
-- plot: bar x=similarity y=labels hue=run_id
SELECT run_id, round(floor(similarity * 20) / 20, 2) AS similarity, count(*) AS labels,
       round(count(*) / sum(count(*)) OVER (PARTITION BY run_id), 4) AS fraction
FROM labels
GROUP BY 1, 2
ORDER BY run_id, similarity;
