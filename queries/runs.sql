-- Runs in the catalog, newest first, with their label counts.
SELECT run_id, status, started, finished, backbone, backbone_fingerprint,
       counts->>'images' AS images, counts->>'tuples' AS tuples, counts->>'labels' AS labels
FROM runs
ORDER BY started DESC;
