import pytest

from labelgen.config import ConfigError, config_hash, parse_overrides
from labelgen.pipeline import DEMO_PRESET, default_conf


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
    from labelgen.pipeline import parse

    assert parse([]).pairing.bin_deg == 45.0 and parse([]).data.builtin == "objects"
    assert parse(["data.builtin=demo"]).pairing.bin_deg == 30.0
    assert parse(["data.builtin=demo", "data.manifest=m.parquet"]).pairing.bin_deg == 45.0
