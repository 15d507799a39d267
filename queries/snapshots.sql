-- The store's snapshots, newest first: what each commit changed, the run it committed, and the
-- models that pinned it (read with at=SNAPSHOT; trainer data.snapshot=SNAPSHOT).
SELECT s.snapshot_id AS snapshot, s.snapshot_time AS at, s.commit_extra_info AS run_id,
       (SELECT string_agg(model_id, ', ') FROM models m WHERE m.snapshot = s.snapshot_id) AS pinned_by,
       s.changes
FROM lake.snapshots() s
ORDER BY s.snapshot_id DESC;
