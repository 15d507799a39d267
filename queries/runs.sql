-- Runs in the store, newest first: status, backbone, code version, counts (the images that anchored
-- tuples, i.e. were new to the store; coverage of the collection after it) and timings.
SELECT run_id, status, snapshot, started, finished, backbone, backbone_fingerprint, label_features, code_version,
       (counts->>'images')::INT AS images, (counts->>'anchors')::INT AS new_images, (counts->>'tuples')::INT AS tuples,
       (counts->>'labels')::INT AS labels, round((counts->>'coverage')::DOUBLE, 3) AS coverage, counts->>'nothing_new' AS nothing_new,
       round((counts->>'features_s')::DOUBLE, 1) AS features_s, round((counts->>'chain_s')::DOUBLE, 1) AS chain_s,
       round((counts->>'vote_s')::DOUBLE, 1) AS vote_s,
       error
FROM runs
ORDER BY started DESC;
