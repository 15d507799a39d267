"""Readers: plain folder, 3D-pose annotations, manifests on S3."""

import json

import boto3
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from labelgen.manifest import read_manifest
from labelgen.readers import folder, pose3d, reader_main


def image(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 6)).save(path)


def test_folder_reader_takes_categories_from_subfolders(tmp_path):
    image(tmp_path / "data" / "dog" / "a.jpg")
    image(tmp_path / "data" / "dog" / "more" / "b.png")
    image(tmp_path / "data" / "cat" / "c.jpeg")
    (tmp_path / "data" / "cat" / "notes.txt").write_text("not an image")
    df = folder.scan(str(tmp_path / "data"))
    assert df.to_dict("list") == {
        "image_id": ["cat/c", "dog/a", "dog/more/b"],
        "uri": ["cat/c.jpeg", "dog/a.jpg", "dog/more/b.png"],
        "category": ["cat", "dog", "dog"],
    }
    assert reader_main(folder.scan, [str(tmp_path / "data"), str(tmp_path / "m.parquet")]) == 0
    m = read_manifest(str(tmp_path / "m.parquet"))  # valid, URIs absolute, no pose
    assert m["uri"][0] == str(tmp_path / "data" / "cat" / "c.jpeg") and m["azimuth"].isna().all()
    with pytest.raises(ValueError, match="no images"):
        folder.scan(str(tmp_path / "data" / "dog" / "more"))


def test_pose_reader_converts_radians_and_finds_masks(tmp_path):
    root = tmp_path / "in3d"
    image(root / "images" / "car" / "n1.JPEG")
    image(root / "images" / "car" / "n2.JPEG")
    image(root / "images" / "car" / "n3.JPEG")
    (root / "annotations" / "car").mkdir(parents=True)
    (root / "annotations" / "car" / "n1.json").write_text(
        json.dumps({"azimuth": np.pi / 2, "elevation": 0.1, "theta": -0.05})
    )
    np.savez(root / "annotations" / "car" / "n2.npz", azimuth=[np.pi], elevation=[0.0], theta=[0.0], distance=[5.0])
    image(root / "masks" / "car" / "n2.png")
    df = pose3d.scan(str(root)).set_index("image_id")
    assert df.loc["car/n1", ["azimuth", "elevation", "theta"]].tolist() == pytest.approx(
        [90.0, 5.7296, -2.8648], abs=1e-3
    )
    assert df.loc["car/n2", "azimuth"] == pytest.approx(180.0) and df.loc["car/n2", "mask_uri"] == "masks/car/n2.png"
    assert np.isnan(df.loc["car/n3", "azimuth"]) and pd.isna(df.loc["car/n3", "mask_uri"])  # no annotation: no pose
    assert reader_main(pose3d.scan, [str(root), str(tmp_path / "m.parquet")]) == 0
    m = read_manifest(str(tmp_path / "m.parquet")).set_index("image_id")
    assert m.loc["car/n2", "mask_uri"] == str(root / "masks" / "car" / "n2.png") and m.loc["car/n1", "mask_uri"] is None
    (root / "annotations" / "car" / "n3.json").write_text(json.dumps({"azimuth": 1.0}))
    with pytest.raises(ValueError, match=r"n3.json: no \['elevation', 'theta'\]"):
        pose3d.scan(str(root))


def test_a_csv_manifest_on_s3_resolves_relative_uris_there(s3_server):
    s3 = boto3.client("s3")
    s3.put_object(
        Bucket="labels",
        Key="sets/dogs/manifest.csv",
        Body=b"image_id,uri,category\n1,img/1.jpg,dog\n2,s3://other/2.jpg,dog\n",
    )
    df = read_manifest(f"{s3_server}/sets/dogs/manifest.csv")
    assert df["uri"].tolist() == ["s3://labels/sets/dogs/img/1.jpg", "s3://other/2.jpg"]
    pd.testing.assert_series_equal(df["category"], pd.Series(["dog", "dog"], name="category"), check_dtype=False)
