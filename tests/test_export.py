"""Label export (`python -m labelgen.export`) over a small store written through the store's
own API (no Ray), with real image files of known, non-square sizes."""

import json
import os
from glob import glob

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from labelgen.export.__main__ import main
from labelgen.export.diysc import from_square, to_square
from labelgen.readers.spair import read_pairs
from labelgen.store import LABEL_SCHEMA, LabelStore, images_table

# category, image id, file, (W, H), manifest split
IMAGES = [
    ("motorcycle", "ma", "ma.png", (120, 80), "train"),
    ("motorcycle", "mb", "mb.jpeg", (60, 90), None),  # no split: counts as train; .jpeg is named .jpg
    ("motorcycle", "mc", "mc.bmp", (50, 50), "val"),  # BMP: written again as PNG
    ("motorcycle", "md", "md.png", (80, 100), "val"),  # has a mask (half size) around x 10-50, y 20-70
    ("motorcycle", "me", "me.png", (70, 40), "test"),
    ("motorcycle", "mf", "mf.png", (40, 70), "test"),
    ("chair", "chair/c1", "c1.jpg", (100, 60), "train"),  # the category's prefix leaves the file's name
    ("chair", "chair/c2", "c2.png", (40, 90), "dev"),
]
SIZES = {i: size for _, i, _, size, _ in IMAGES}
R1 = {  # (category, source, target): labels
    ("motorcycle", "ma", "mb"): 4,
    ("motorcycle", "mb", "ma"): 2,
    ("motorcycle", "mc", "md"): 3,  # val
    ("motorcycle", "ma", "mc"): 1,  # train and val: two splits
    ("motorcycle", "me", "mf"): 2,  # test
    ("chair", "chair/c1", "chair/c2"): 3,  # train and dev: both go to trn
}
R2 = {("motorcycle", "ma", "mb"): 2}  # relabels r1's pair: r2's 2 labels are its current ones
SPAIR_CATEGORIES = ["aeroplane", "chair", "motorbike"]
TRAIN = {"ma", "mb", "chair/c1", "chair/c2"}  # the images of train and dev pairs


def make_images(root) -> pd.DataFrame:
    rows = []
    for category, image_id, name, size, split in IMAGES:
        Image.new("RGB", size, (90, 120, 150)).save(root / name)
        rows.append({"category": category, "image_id": image_id, "uri": str(root / name), "split": split})
    mask = Image.new("L", (40, 50))
    mask.paste(255, (5, 10, 25, 35))
    mask.save(root / "md_mask.png")
    frame = pd.DataFrame(rows)
    frame["width"], frame["height"] = zip(*(SIZES[i] for i in frame["image_id"]))
    frame["mask_uri"] = np.where(frame["image_id"] == "md", str(root / "md_mask.png"), None)
    return frame


def commit_run(store: LabelStore, run_id: str, pairs: dict, images: pd.DataFrame, seed: int) -> int:
    """A run's labels on `pairs`, random points inside the images and distinct confidences."""
    rng = np.random.default_rng(seed)
    store.begin_run({"run_id": run_id, "config_hash": "h", "config": "k: 1"})
    for category in sorted({c for c, _, _ in pairs}):
        rows = []
        for (c, src, tgt), n in pairs.items():
            if c != category:
                continue
            (sw, sh), (tw, th) = SIZES[src], SIZES[tgt]
            for confidence in rng.permutation(n) / n + 0.01:
                x0, y0, x1, y1 = rng.uniform(0, 1, 4)
                rows.append(
                    dict(run_id=run_id, category=c, src_image_id=src, tgt_image_id=tgt, src_x=x0 * sw, src_y=y0 * sh,
                         tgt_x=x1 * tw, tgt_y=y1 * th, hops=1, cycle_error=0.5, similarity=0.8, sphere_angle=None,
                         support=2, confidence=float(confidence))
                )  # fmt: skip
        labels = pa.Table.from_pylist(rows, schema=LABEL_SCHEMA)
        frame = images[images["category"] == category].assign(run_id=run_id)
        store.files(run_id).write_category(category, labels, images_table(frame), {})
    store.commit(run_id, {"labels": sum(pairs.values())}, [])
    return store.current_snapshot()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    images = make_images(root)
    store = LabelStore(str(root / "store"))
    commit_run(store, "r1", R1, images, seed=1)
    commit_run(store, "r2", R2, images, seed=2)
    return str(root / "store")


@pytest.fixture(scope="module")
def spair_root(tmp_path_factory):
    """An SPair-71k folder as DIY-SC evaluates on: its categories, annotations and images."""
    root = tmp_path_factory.mktemp("SPair-71k")
    for category in SPAIR_CATEGORIES:
        for folder in ("ImageAnnotation", "JPEGImages"):
            os.makedirs(root / folder / category)
        (root / "ImageAnnotation" / category / "s1.json").write_text("{}")
        Image.new("RGB", (30, 20)).save(root / "JPEGImages" / category / "s1.jpg")
    os.makedirs(root / "PairAnnotation" / "test")
    return str(root)


def export(capsys, store, out, *args) -> tuple[int, str, str]:
    code = main([f"store={store}", f"out={out}", *args])
    o, e = capsys.readouterr()
    return code, o, e


def current(store: str, where: str = "TRUE") -> pd.DataFrame:
    """The store's current labels, most confident first within a pair."""
    con = LabelStore(store).connect()
    try:
        return con.sql(f"SELECT * FROM labels WHERE {where} ORDER BY confidence DESC").df()
    finally:
        con.close()


def count(store: str, where: str) -> int:
    return len(current(store, where))


def labels_of(frame: pd.DataFrame, src: str, tgt: str) -> tuple[np.ndarray, np.ndarray]:
    rows = frame[(frame["src_image_id"] == src) & (frame["tgt_image_id"] == tgt)]
    return rows[["src_x", "src_y"]].to_numpy(), rows[["tgt_x", "tgt_y"]].to_numpy()


def plain(value) -> bool:
    """Only what torch.load(weights_only=True) and any reader take: lists, dicts, str, int, float."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(plain(v) for v in value)
    return type(value) in (str, int, float)


# Copied from odunkel/DIY-SC utils/utils_dataset.py::load_spair_data_pseudo_gt (commit e1121c0),
# its load_pt=True path, unchanged but for the json branch and return_flips: the reference
# code reading an export, as pck_train.py's load_and_prepare_data calls it.
def load_spair_data_pseudo_gt(path, ann_dir, size=256, category="cat", split="trn", max_kps=100, subsample=None):
    np.random.seed(42)
    pairs = torch.load(f"{ann_dir}/{split}/{category}_anns.pt")
    if subsample is not None and subsample > 0 and subsample < len(pairs):
        pairs = [pairs[ix] for ix in np.random.choice(len(pairs), subsample)]
    files, thresholds, kps = [], [], []
    if len(pairs) == 0:
        return files, kps, thresholds, []
    for data in pairs:
        source_fn = f"{path}/JPEGImages/{category}/{data['src_imname']}"
        target_fn = f"{path}/JPEGImages/{category}/{data['trg_imname']}"
        src_kps = torch.zeros((max_kps, 3), dtype=torch.float)
        tgt_kps = torch.zeros((max_kps, 3), dtype=torch.float)
        source_kps_loaded = torch.tensor(data["source_kps"], dtype=float)
        target_kps_loaded = torch.tensor(data["target_kps"], dtype=float)
        num_kps = max_kps if max_kps < source_kps_loaded.shape[0] else source_kps_loaded.shape[0]
        rand_inds = np.random.choice(source_kps_loaded.shape[0], num_kps, replace=False)
        src_kps[:num_kps, :2] = source_kps_loaded[rand_inds]
        src_kps[:num_kps, 2] = 1
        num_kps = max_kps if max_kps < target_kps_loaded.shape[0] else target_kps_loaded.shape[0]
        tgt_kps[:num_kps, :2] = target_kps_loaded[rand_inds]
        tgt_kps[:num_kps, 2] = 1
        thresholds.append(source_kps_loaded.max().item())
        thresholds.append(target_kps_loaded.max().item())
        kps.append(src_kps)
        kps.append(tgt_kps)
        files.append(source_fn)
        files.append(target_fn)
    kps = torch.stack(kps)
    (used_kps,) = torch.where(kps[:, :, 2].any(dim=0))
    kps = kps[:, used_kps, :]
    return files, kps, thresholds, used_kps


def test_the_square_frame_is_diysc_resize():
    # 120 x 80: x 7, 560 rows high, 140 rows of padding above; 60 x 90: x 9.33, 560 wide, 140 columns left
    xy = np.array([[0.0, 0.0], [60.0, 40.0], [120.0, 80.0]])
    assert to_square(xy, 120, 80).tolist() == [[0.0, 140.0], [420.0, 420.0], [840.0, 700.0]]
    assert np.allclose(to_square(np.array([[30.0, 45.0]]), 60, 90), [[420.0, 420.0]])
    assert to_square(np.array([[25.0, 50.0]]), 50, 50).tolist() == [[420.0, 840.0]]
    # np.around rounds halves to even, as DIY-SC's resize does: 840 * 3 / 8 = 315 wide exactly, 1 / 2 less
    assert to_square(np.array([[0.0, 0.0]]), 3, 8).tolist() == [[262.0, 0.0]]
    sizes = np.array([[120, 80], [60, 90], [50, 50], [333, 500]])
    pts = np.random.default_rng(0).uniform(0, 1, (4, 2)) * sizes
    assert np.allclose(from_square(to_square(pts, *sizes.T), *sizes.T), pts)


def test_diysc_reads_back_as_the_store_labels(store, spair_root, tmp_path, capsys):
    out = tmp_path / "diysc"
    code, said, err = export(capsys, store, out, "category_map=[motorcycle=motorbike]", f"spair={spair_root}")
    assert code == 0, err
    version = f"{out}/s{LabelStore(store).current_snapshot()}"
    assert "exported 10 labels on 4 image pairs of 2 categories" in said
    assert "left out: 3 labels on pairs of image splits diysc has no place for: test/test (1 pair), train/val" in said
    assert f"--DATASET_DIR_SPAIR {out} --TRAIN_DATASET_ANN_DIR {version}" in said
    # DIY-SC lists its categories from ImageAnnotation/ (SPair's) and opens a trn and a val file for each
    assert sorted(os.listdir(out / "ImageAnnotation")) == SPAIR_CATEGORIES
    anns = {
        (c, s): torch.load(f"{version}/{s}/{c}_anns.pt", weights_only=True)
        for c in SPAIR_CATEGORIES
        for s in ("trn", "val")
    }
    assert anns["aeroplane", "trn"] == anns["aeroplane", "val"] == anns["chair", "val"] == []
    assert all(plain(a) for a in anns.values())
    keys = {"src_imname", "trg_imname", "src_imsize", "tgt_imsize", "num_kps", "source_kps", "target_kps"}
    assert all(set(p) == keys | {"img_size_kps"} and p["img_size_kps"] == 840 for a in anns.values() for p in a)
    # the counts are the store's: r2's 2 labels on (ma, mb) and r1's on (mb, ma); r1's val pair; the chairs
    train = ", ".join(f"'{i}'" for i in sorted(TRAIN))
    train = count(store, f"src_image_id IN ({train}) AND tgt_image_id IN ({train})")
    val = count(store, "src_image_id = 'mc' AND tgt_image_id = 'md'")
    assert sum(p["num_kps"] for c in SPAIR_CATEGORIES for p in anns[c, "trn"]) == train == 7
    assert sum(p["num_kps"] for p in anns["motorbike", "val"]) == val == 3
    # every point maps back onto the store's label, in the order of confidence
    labels = current(store)
    names = {"ma": "ma.png", "mb": "mb.jpg", "mc": "mc.png", "md": "md.png", "chair/c1": "c1.jpg", "chair/c2": "c2.png"}
    ids = {v: k for k, v in names.items()}
    pairs = [p for a in anns.values() for p in a]
    assert len(pairs) == 4
    for p in pairs:
        src, tgt = labels_of(labels, ids[p["src_imname"]], ids[p["trg_imname"]])
        assert p["src_imsize"] == list(SIZES[ids[p["src_imname"]]]) and p["num_kps"] == len(src) == len(p["source_kps"])
        assert np.abs(from_square(np.array(p["source_kps"]), *p["src_imsize"]) - src).max() < 0.5
        assert np.abs(from_square(np.array(p["target_kps"]), *p["tgt_imsize"]) - tgt).max() < 0.5
    # read by DIY-SC's own loader code, category by category as its trainer does
    for category in sorted(os.listdir(out / "ImageAnnotation")):
        for split in ("trn", "val"):
            files, kps, thresholds, _ = load_spair_data_pseudo_gt(str(out), version, 840, category, split, 50)
            assert len(files) == 2 * len(anns[category, split]) == len(thresholds)
            for f, ann in zip(files[::2], anns[category, split]):
                assert f.split("/")[-2] == category  # pck_train's SPAIR_FLIP_TRN key
                assert Image.open(f).size == tuple(ann["src_imsize"])
            assert all(0 <= t <= 840 for t in thresholds)
    # preprocess_map.py computes features for the .jpg, .JPEG and .png files under JPEGImages/
    placed = sorted(os.path.relpath(f, out / "JPEGImages") for f in glob(f"{out}/JPEGImages/*/*"))
    assert placed == [
        "aeroplane/s1.jpg", "chair/c1.jpg", "chair/c2.png", "chair/s1.jpg",
        "motorbike/ma.png", "motorbike/mb.jpg", "motorbike/mc.png", "motorbike/md.png", "motorbike/s1.jpg",
    ]  # fmt: skip
    assert os.path.islink(out / "JPEGImages/motorbike/mb.jpg")
    converted = out / "JPEGImages/motorbike/mc.png"  # from BMP
    assert not os.path.islink(converted) and Image.open(converted).format == "PNG"


def test_spair_pairs_read_back_in_image_pixels(store, tmp_path, capsys):
    out = tmp_path / "spair"
    code, said, err = export(capsys, store, out, "format=spair", "link=copy", "category_map=[motorcycle=motorbike]")
    assert code == 0, err
    assert "exported 12 labels on 5 image pairs" in said and "place for: train/val (1 pair)" in said
    labels = current(store)
    read = {s: read_pairs(str(out), s) for s in ("trn", "val", "test")}
    assert [len(read[s]) for s in read] == [3, 1, 1]
    for split, pairs in read.items():
        assert sorted(os.path.basename(f)[:-5] for f in glob(f"{out}/PairAnnotation/{split}/*:*.json")) == (
            (out / "Layout/large" / f"{split}.txt").read_text().split()
        )
        for pair in pairs:
            src, tgt = labels_of(labels, *(i.removeprefix("motorbike/") for i in (pair.src, pair.tgt)))
            assert np.abs(pair.src_kps - src).max() < 0.01 and np.abs(pair.tgt_kps - tgt).max() < 0.01
    # the keys GeoAware-SC's load_spair_data reads from a pair file, and SPair's conventions
    with open(glob(f"{out}/PairAnnotation/val/*:motorbike.json")[0]) as f:
        ann = json.load(f)
    assert ann["category"] == "motorbike" and (ann["src_imname"], ann["trg_imname"]) == ("mc.png", "md.png")
    assert ann["src_imsize"] == [50, 50, 3] and ann["trg_imsize"] == [80, 100, 3]
    assert ann["src_bndbox"] == [0, 0, 50, 50] and ann["trg_bndbox"] == [10, 20, 50, 70]  # md's mask, scaled x2
    assert not any(os.path.islink(f) for f in glob(f"{out}/JPEGImages/*/*"))  # link=copy
    assert Image.open(out / "JPEGImages/motorbike/mb.jpg").size == (60, 90)


def test_parquet_keeps_the_most_confident_labels(store, tmp_path, capsys):
    out = tmp_path / "parquet"
    code, said, err = export(capsys, store, out, "format=parquet", "max_per_pair=2", "split=[train,val,dev]")
    assert code == 0, err
    snapshot = LabelStore(store).current_snapshot()
    files = sorted(glob(f"{out}/category=*/*.parquet"))
    assert [os.path.basename(os.path.dirname(f)) for f in files] == ["category=chair", "category=motorcycle"]
    meta = pq.read_schema(files[0]).metadata
    assert meta[b"labelgen.snapshot"] == str(snapshot).encode() and meta[b"labelgen.store"] == store.encode()
    got = pd.read_parquet(out)
    con = LabelStore(store).connect()
    want = con.sql(
        """SELECT l.* FROM labels l
           JOIN images s ON s.run_id = l.run_id AND s.image_id = l.src_image_id
           JOIN images t ON t.run_id = l.run_id AND t.image_id = l.tgt_image_id
           WHERE coalesce(s.split, 'train') IN ('train', 'val', 'dev')
             AND coalesce(t.split, 'train') IN ('train', 'val', 'dev')
           QUALIFY row_number() OVER (PARTITION BY l.src_image_id, l.tgt_image_id ORDER BY l.confidence DESC) <= 2"""
    ).df()
    con.close()
    assert len(got) == len(want) == 9  # (ma, mb), (mb, ma), (mc, md), (chair/c1, chair/c2) 2 each, (ma, mc) 1
    key = ["src_image_id", "tgt_image_id", "confidence"]
    assert got[key].sort_values(key).values.tolist() == want[key].sort_values(key).values.tolist()
    assert list(got.columns) == [*LABEL_SCHEMA.names[:1], *LABEL_SCHEMA.names[2:], "split", "category"]
    ordered = got.sort_values([*key[:2], "confidence"], ascending=[True, True, False], kind="stable")
    assert ordered.index.tolist() == got.index.tolist()  # by pair, the most confident first
    assert got["split"].fillna("none").value_counts().to_dict() == {"train": 4, "val": 2, "none": 3}  # of two splits
    assert json.loads((out / "_export.json").read_text())["labels"] == 9


def test_a_pinned_snapshot_exports_the_same_after_later_runs(tmp_path, capsys):
    images = make_images(tmp_path)
    store = LabelStore(str(tmp_path / "store"))
    first = commit_run(store, "r1", R1, images, seed=1)
    assert export(capsys, store.uri, tmp_path / "before", "format=parquet", f"at={first}")[0] == 0
    commit_run(store, "r2", R2, images, seed=2)  # relabels (ma, mb)
    assert export(capsys, store.uri, tmp_path / "after", "format=parquet", f"at={first}")[0] == 0
    assert export(capsys, store.uri, tmp_path / "latest", "format=parquet")[0] == 0
    before, after, latest = (pd.read_parquet(tmp_path / name) for name in ("before", "after", "latest"))
    assert before.equals(after) and len(before) == 15  # r1's labels, every column as it was
    pair = (latest["src_image_id"] == "ma") & (latest["tgt_image_id"] == "mb")
    assert set(latest[pair]["run_id"]) == {"r2"} and len(latest) == 15 - 4 + 2


def test_mistakes_are_said_in_one_line(store, spair_root, tmp_path, capsys):
    def refused(*args) -> str:
        code, _, err = export(capsys, store, tmp_path / "out", *args)
        assert code == 2, err
        assert len(err.strip().splitlines()) == 1
        return err

    assert "format=xml: choose diysc | spair | parquet" in refused("format=xml")
    assert "category_map: no category boat" in refused("category_map=[boat=ship]")
    assert "its categories: chair, motorcycle" in refused("categories=[table]")
    assert "runs: no run nope was committed" in refused("runs=[nope]")
    assert "at=999: store" in refused("at=999")
    err = refused("categories=[chair]", "split=[val]")
    assert "no labels to export" in err and "categories=[chair] leaves 3" in err and "split=[val] leaves 0" in err
    assert "writes pairs whose two images are of splits train, dev, val" in refused("split=[test]")
    assert "motorcycle are not SPair-71k's" in refused(f"spair={spair_root}")
    assert "only format=diysc takes it" in refused("format=spair", f"spair={spair_root}")
    assert "link=hard: choose symlink | copy | none" in refused("link=hard")
    assert main([f"store={store}"]) == 2 and "out: name the folder" in capsys.readouterr().err
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    code, _, err = export(capsys, store, tmp_path / "mine", "overwrite=true")
    assert code == 2 and "not an export" in err and (tmp_path / "mine" / "notes.txt").exists()
    assert export(capsys, store, tmp_path / "done", "format=parquet")[0] == 0
    code, _, err = export(capsys, store, tmp_path / "done")
    assert code == 2 and "give overwrite=true" in err
    assert export(capsys, store, tmp_path / "done", "overwrite=true")[0] == 0
    assert json.loads((tmp_path / "done" / "_export.json").read_text())["format"] == "diysc"
    assert not glob(f"{tmp_path}/.done.*")  # the staging folders are gone
