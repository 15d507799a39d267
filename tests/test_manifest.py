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
    (tmp_path / "m.csv").write_text(
        "image_id,uri,category,azimuth,mask_uri\n1,img/1.png,dog,45,masks/1.png\n2,/abs/2.png,dog,,\n"
    )
    df = read_manifest(str(tmp_path / "m.csv"))
    assert df["image_id"].tolist() == ["1", "2"]  # ids stay strings
    assert df["uri"].tolist() == [f"{tmp_path}/img/1.png", "/abs/2.png"]
    assert df["mask_uri"].tolist() == [f"{tmp_path}/masks/1.png", None]


def test_a_file_uri_manifest_resolves_relative_uris_from_its_folder(tmp_path):
    (tmp_path / "m.csv").write_text("image_id,uri,category\n1,img/1.png,dog\n")
    assert read_manifest(f"file://{tmp_path}/m.csv")["uri"].tolist() == [
        f"{tmp_path}/img/1.png"
    ]  # was <cwd>/file:<tmp_path>/...


def test_unreadable_manifest_says_so(tmp_path):
    with pytest.raises(ManifestError, match="cannot be read"):
        read_manifest(str(tmp_path / "nope.parquet"))
    with pytest.raises(ManifestError, match="use .parquet or .csv"):
        read_manifest(str(tmp_path / "m.json"))


def write(tmp_path, data: bytes, name="m.csv") -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


@pytest.mark.parametrize("data", [b"", b"\n\n"])
def test_an_empty_csv_file_says_what_a_manifest_starts_with(tmp_path, data):
    with pytest.raises(
        ManifestError, match="empty file; a CSV manifest starts with a header line"
    ):  # was EmptyDataError
        read_manifest(write(tmp_path, data))


def test_a_manifest_without_rows_is_refused(tmp_path):
    with pytest.raises(ManifestError, match="no rows; a manifest lists the images"):  # was accepted: a run of nothing
        read_manifest(write(tmp_path, b"image_id,uri,category\n"))
    frame().iloc[:0].to_parquet(tmp_path / "m.parquet")
    with pytest.raises(ManifestError, match="no rows"):
        read_manifest(str(tmp_path / "m.parquet"))


def test_bytes_that_are_not_utf8_are_named_by_line(tmp_path):
    data = b"image_id,uri,category\na,\xff\xfe.png,c\nb,b.png,c\nc,x\xe9.png,c\n"  # was UnicodeDecodeError
    with pytest.raises(ManifestError) as e:
        read_manifest(write(tmp_path, data))
    assert "2 problem(s)" in str(e.value)
    assert "line 2: b'\\xff\\xfe' is not UTF-8; save the manifest as UTF-8 text" in str(e.value)
    assert "line 4: b'\\xe9'" in str(e.value)
    with pytest.raises(ManifestError, match="line 1: b'\\\\xff' is not UTF-8"):
        read_manifest(write(tmp_path, b"image_id,uri,cat\xffegory\na,a.png,c\n"))


def test_a_row_whose_fields_do_not_match_the_header_is_named_by_line(tmp_path):
    # pandas took the first row's extra fields for an index and shifted its values a column left
    with pytest.raises(ManifestError) as e:
        read_manifest(write(tmp_path, b"image_id,uri,category\na,a.png,c,extra,more\nb\nc,c.png,c\n"))
    assert "line 2: 5 field(s) where the header has 3; quote values that hold commas or quotes" in str(e.value)
    assert "line 3: 1 field(s)" in str(e.value)
    with pytest.raises(ManifestError, match="line 2: 1 field"):  # an unclosed quote: was ParserError
        read_manifest(write(tmp_path, b'image_id,uri,category\n"a,a.png,c\nb,b.png,c\n'))


def test_csv_text_stays_as_written(tmp_path):
    df = read_manifest(
        write(tmp_path, b'image_id,uri,category,azimuth,note\n007,1,NA,  12 ,1\nnull,"a, b.png",cat,nan,x\n')
    )
    assert df["image_id"].tolist() == ["007", "null"]  # 'null' and 'NA' were missing, a number uri "not a string"
    assert df["uri"].tolist() == [f"{tmp_path}/1", f"{tmp_path}/a, b.png"]
    assert df["category"].tolist() == ["NA", "cat"]
    assert df["azimuth"].tolist()[0] == 12.0 and df["azimuth"].isna().tolist() == [False, True]  # nan: not given
    assert df["note"].tolist() == ["1", "x"]


def test_a_column_given_twice_is_refused(tmp_path):
    with pytest.raises(ManifestError, match=r"column\(s\) \['image_id'\] given more than once"):  # was image_id.1
        read_manifest(write(tmp_path, b"image_id,image_id,uri,category\na,b,a.png,c\n"))
    twice = pd.DataFrame([["a", "b", "a.png", "c"]], columns=["image_id", "image_id", "uri", "category"])
    with pytest.raises(ManifestError, match="given more than once"):  # was "Operands are not aligned"
        validate(twice)
    levels = pd.DataFrame(
        [["a", "a.png", "c"]], columns=pd.MultiIndex.from_tuples([("image_id", 0), ("uri", 0), ("category", 0)])
    )
    with pytest.raises(ManifestError, match="2 header rows"):
        validate(levels)


@pytest.mark.parametrize("data", [b"PAR1 not parquet", b""])
def test_an_unreadable_parquet_file_says_so(tmp_path, data):
    with pytest.raises(ManifestError, match="not a Parquet file pyarrow can read"):  # was ArrowInvalid
        read_manifest(write(tmp_path, data, "m.parquet"))


def test_missing_ids_are_empty_not_repeats():
    with pytest.raises(ManifestError) as e:  # was IndexError, looking up the first row of a missing id
        validate(frame(image_id=[None, None]))
    assert "2 problem(s)" in str(e.value) and "repeats" not in str(e.value)


@pytest.mark.parametrize(
    "column, value, message",
    [
        ("azimuth", 1e308, r"1e\+308 is outside -360..360 degrees"),  # accepted: pairing's int64 bins overflowed
        ("azimuth", True, "True is not a finite number of degrees"),  # accepted as 1.0
        ("azimuth", pd.Timestamp("2024-01-01"), "is not a finite number of degrees"),  # accepted as nanoseconds
        ("azimuth", "NA", "'NA' is not a finite number of degrees; give a number or leave it empty"),
        ("image_id", "a\nb", r"'a\\nb' holds a control character"),
        ("category", "a/b", "holds '/' or '\\\\', but a category names folders of the store"),  # was a nested folder
        ("category", "x" * 201, "longer than 200 bytes"),
        ("uri", "http://host/a.png", "a URI of a storage labelgen cannot read"),  # the run crashed listing versions
        ("uri", "a/" + "é" * 128, "a name longer than 255 bytes"),  # ... with File name too long
        ("uri", "x/" * 2100, "longer than 4,096 bytes"),
        ("uri", "a\x00b", "holds a control character"),
        ("uri", b"a.png", "b'a.png' is not a string; store the column as text"),
        ("uri", "a\udcffb", "holds bytes that are not UTF-8"),  # was UnicodeEncodeError
        ("truth_uri", 5, "5 is not a string"),  # was TypeError, resolving it
        ("homography", [1.0, 2.0, 3.0], "is not 9 finite numbers"),  # the store's images table failed after the chains
    ],
)
def test_values_the_pipeline_cannot_use_are_refused(column, value, message):
    df = frame()
    df[column] = pd.Series([value, None if column not in ("image_id", "uri", "category") else "ok"], dtype=object)
    with pytest.raises(ManifestError, match=f"row 0, column '{column}': .*{message}"):
        validate(df)


def test_nan_and_an_empty_value_are_not_given():
    df = validate(frame(azimuth=[float("nan"), "nan"], mask_uri=["", "m.png"], split=["", "train"]))
    assert df["azimuth"].isna().all()
    assert df["mask_uri"].tolist() == [None, "m.png"] and df["split"].tolist() == [None, "train"]


@pytest.mark.parametrize(
    "uri, message",
    [
        (5, "manifest 5: not a path"),
        ("/tmp/m\x00.csv", "holds a control character"),  # was ArrowInvalid
        ("/tmp/m\udcff.csv", "the name holds bytes that are not UTF-8"),  # was UnicodeEncodeError
        ("/tmp/manifest", "no suffix to tell its format"),  # said: unknown format './tmp/manifest'
        ("/tmp/" + "m" * 300 + ".csv", "a name longer than 255 bytes"),
    ],
)
def test_a_manifest_path_no_storage_opens_is_refused(uri, message):
    with pytest.raises(ManifestError, match=message):
        read_manifest(uri)


def test_every_problem_is_counted_and_the_first_twenty_worded():
    with pytest.raises(ManifestError) as e:
        validate(pd.DataFrame({"image_id": ["a"] * 26, "uri": "a.png", "category": "c"}))
    lines = str(e.value).splitlines()
    assert lines[0] == "manifest: 25 problem(s)" and len(lines) == 22 and lines[-1] == "... and 5 more"
    assert lines[1] == "row 1, column 'image_id': 'a' repeats row 0; ids must be unique"
