import os

import pytest
from omegaconf import OmegaConf

from labelgen.config import ConfigError, config_hash, parse_overrides
from labelgen.pipeline import DEMO_PRESET, default_conf, parse


def test_overrides_and_presets_merge_in_order():
    conf = parse_overrides(default_conf, ["pairing.k=3", "labels.radius=1.5"], DEMO_PRESET)
    assert conf.pairing.k == 3 and conf.labels.radius == 1.5 and conf.pairing.bin_deg == 30.0
    conf = parse_overrides(default_conf, ["pairing.bin_deg=45"], DEMO_PRESET)
    assert conf.pairing.bin_deg == 45
    assert config_hash(conf) != config_hash(parse_overrides(default_conf, []))


def test_optional_number_keys_take_null_and_others_refuse_it():
    conf = parse_overrides(default_conf, ["labels.keep=null", "labels.max_gap_deg=null", "labels.pair_radius=0.5"])
    assert conf.labels.keep is None and conf.labels.max_gap_deg is None and conf.labels.pair_radius == 0.5
    with pytest.raises(ConfigError, match="labels.radius takes a finite number"):
        parse_overrides(default_conf, ["labels.radius=null"])
    with pytest.raises(ConfigError, match="labels.keep takes a finite number"):
        parse_overrides(default_conf, ["labels.keep=lots"])


def test_unknown_keys_and_malformed_arguments_are_clear_errors():
    with pytest.raises(ConfigError, match=r"Key 'radius' is not in struct.*known keys: .*labels\.radius"):
        parse_overrides(default_conf, ["pairing.radius=2"])
    with pytest.raises(ConfigError, match="not key=value overrides"):
        parse_overrides(default_conf, ["--fast"])


def test_the_demo_preset_applies_to_the_planar_demo_only():
    assert parse([]).pairing.bin_deg == 45.0 and parse([]).data.builtin == "objects"
    assert parse(["data.builtin=demo"]).pairing.bin_deg == 30.0
    assert parse(["data.builtin=demo", "data.manifest=m.parquet"]).pairing.bin_deg == 45.0


def test_a_config_file_is_the_base_and_arguments_override_it(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("pairing: {k: 3, bin_deg: 30}\nrun_id: 007\nlabels: {sphere: off, keep: null}\nstore: out\n")
    conf = parse([f"config={path}", "pairing.k=5"])
    assert conf.pairing.k == 5 and conf.pairing.bin_deg == 30.0 and conf.labels.keep is None
    assert conf.run_id == "007" and conf.labels.sphere == "off"  # text as written, as on the command line
    assert conf.store == os.path.abspath("out")


def test_a_config_files_bad_keys_are_refused_like_arguments_naming_the_file(tmp_path, monkeypatch):
    path = tmp_path / "run.yaml"
    path.write_text("pairing: {k: abc, radiuss: 2}\nlabels: 3\n")
    with pytest.raises(ConfigError) as e:
        parse([f"config={path}", "pairing.k=2"])  # an argument does not mend a bad file
    lines = str(e.value).splitlines()
    assert lines[:4] == [
        "config: 3 problems",
        f"pairing.k=abc (in {path}): pairing.k takes an integer (default 4), not 'abc'",
        f"pairing.radiuss=2 (in {path}): Key 'radiuss' is not in struct: the config has no key pairing.radiuss; "
        "did you mean pairing.seed or pairing.pose or pairing.neighbours?",
        f"labels=3 (in {path}): labels is a section of keys, not a value; set one of them, e.g. labels.radius=2.0",
    ]
    assert lines[4].startswith("known keys: store, catalog")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="config=other.yaml: the file cannot be read"):
        parse(["config=other.yaml"])
    for text, message in [
        (b"a: [\n", "cannot be read as YAML"),
        (b"- a\n", "holds no keys"),
        (b"k: \xff\n", "holds bytes that are not UTF-8"),
    ]:
        (tmp_path / "other.yaml").write_bytes(text)
        with pytest.raises(ConfigError, match=f"config=other.yaml: {message}"):
            parse(["config=other.yaml"])
    with pytest.raises(ConfigError, match="config= is given 2 times"):
        parse(["config=other.yaml", "config=run.yaml"])


def test_a_runs_stored_config_written_out_and_given_back_is_the_same_config(tmp_path, capsys):
    """python -m labelgen.store config RUN > FILE.yaml; config=FILE.yaml: the run's config again,
    presets and text as written included."""
    from labelgen.store import LabelStore
    from labelgen.store.__main__ import main as store_main

    conf = parse(["data.builtin=demo", "run_id=007", "labels.sphere=off", f"store={tmp_path / 'store'}"])
    LabelStore(conf.store).begin_run(
        {
            "run_id": "007",
            "manifest": "m.parquet",
            "backbone": "mobilenetv2",
            "backbone_fingerprint": "fp",
            "config": OmegaConf.to_yaml(conf),  # as labelgen.pipeline stores it
            "config_hash": config_hash(conf),
        }
    )
    assert store_main(["config", "007", f"store={conf.store}"]) == 0
    (tmp_path / "run.yaml").write_text(capsys.readouterr().out)
    again = parse([f"config={tmp_path / 'run.yaml'}"])
    assert config_hash(again) == config_hash(conf) and again.pairing.bin_deg == 30.0 and again.run_id == "007"
    assert store_main(["config", "nope", f"store={conf.store}"]) == 2
    assert "has no run nope" in capsys.readouterr().err
