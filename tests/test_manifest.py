import pandas as pd
import pytest

from labelgen.manifest import ManifestError, read_manifest, validate


def frame(**cols):
    base = {"image_id": ["a", "b"], "uri": ["a.png", "b.png"], "category": ["cat", "cat"]}
    base.update(cols)
    return pd.DataFrame(base)


def test_missing_columns_are_named_with_the_fix():
    with pytest.raises(ManifestError, match=r"missing column\(s\) \['category'\]; a manifest needs"):
        validate(pd.DataFrame({"image_id": ["a"], "uri": ["a.png"]}))


def test_duplicate_ids_name_both_rows():
    with pytest.raises(ManifestError, match=r"row 1, column 'image_id': 'a' repeats row 0"):
        validate(frame(image_id=["a", "a"]))


def test_bad_pose_and_empty_uri_name_row_and_column():
    with pytest.raises(ManifestError) as e:
        validate(frame(azimuth=["10", "north"], uri=["a.png", None]))
    msg = str(e.value)
    assert "2 problem(s)" in msg
    assert "row 1, column 'azimuth': 'north' is not a finite number of degrees" in msg
    assert "row 1, column 'uri': empty" in msg


def test_missing_pose_is_allowed_and_optional_columns_are_filled():
    df = validate(frame(azimuth=[30.0, None]))
    assert df["azimuth"].isna().tolist() == [False, True]
    assert df["mask_uri"].tolist() == [None, None]
    assert df["elevation"].isna().all()


def test_csv_manifest_resolves_relative_uris(tmp_path):
    (tmp_path / "m.csv").write_text("image_id,uri,category,azimuth,mask_uri\n1,img/1.png,dog,45,masks/1.png\n2,/abs/2.png,dog,,\n")
    df = read_manifest(str(tmp_path / "m.csv"))
    assert df["image_id"].tolist() == ["1", "2"]  # ids stay strings
    assert df["uri"].tolist() == [f"{tmp_path}/img/1.png", "/abs/2.png"]
    assert df["mask_uri"].tolist() == [f"{tmp_path}/masks/1.png", None]


def test_unreadable_manifest_says_so(tmp_path):
    with pytest.raises(ManifestError, match="cannot be read"):
        read_manifest(str(tmp_path / "nope.parquet"))
    with pytest.raises(ManifestError, match="use .parquet or .csv"):
        read_manifest(str(tmp_path / "m.json"))
