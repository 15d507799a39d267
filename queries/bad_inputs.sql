-- Inputs a run skipped, with the stage and the reason.
SELECT run_id, stage, image_id, uri, error FROM bad_inputs ORDER BY run_id, stage, image_id;
