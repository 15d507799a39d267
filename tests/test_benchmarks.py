"""The benchmark's yardstick must be the same computation: the published per-tuple loop
and the service's chain stage give identical candidate labels."""

from omegaconf import OmegaConf

from benchmarks.chains import LIKE_REFERENCE, as_dict, same_labels, service_candidates
from benchmarks.reference import reference_candidates
from labelgen import pipeline
from labelgen.features import FeatureCache, FeatureWorker, worker_batch
from labelgen.tuples import make_tuples
from tests.support.tiny import tiny_demo_args


def test_reference_generator_and_service_give_identical_candidates(tiny_demo, tmp_path):
    conf = pipeline.parse([*tiny_demo_args(tiny_demo), f"store={tmp_path}"])
    inputs = pipeline.prepare(conf)
    df, fingerprint = inputs.df, inputs.fingerprint
    cache = str(tmp_path / "features")
    features = FeatureCache(cache, fingerprint)
    worker = FeatureWorker(inputs.backbone, inputs.image_size, features, flips=False)
    worker(worker_batch(df))
    tuples = make_tuples(df, conf.pairing, features).by_category
    assert sum(map(len, tuples.values())) == 4  # 2 categories x 1 sweep x both directions
    svc = as_dict(service_candidates(tuples, features, OmegaConf.merge(conf.labels, LIKE_REFERENCE)))
    ref = reference_candidates([t for ts in tuples.values() for t in ts], features, conf.labels.radius)
    result = same_labels(ref, svc)
    assert result["labels"] > 10_000 and result["identical"], result


def test_the_stage_times_are_read_back_from_the_run_summary():
    from benchmarks.memory import stages

    summary = (
        "run r: committed\n  store     /s\n  time      ray start 3.1 s, features 20.0 s, commit 0.4 s, total 41.0 s\n"
    )
    assert stages(summary) == {"ray start": 3.1, "features": 20.0, "commit": 0.4, "total": 41.0}
