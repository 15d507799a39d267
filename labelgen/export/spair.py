"""SPair-71k-style pair annotations, one JSON file per ordered image pair:

    <out>/PairAnnotation/<trn|val|test>/<pair_id>-<src>-<trg>:<category>.json
    <out>/Layout/large/<trn|val|test>.txt     the files' names, one a line (SPair's split lists)
    <out>/JPEGImages/<category>/<image>

Pairs of two train (or dev) images go to trn, of two val images to val, of two test
images to test; pairs of two splits are left out. Each file holds SPair's keys, filled
from the store:

- pair_id (the export's running number), category (the export's name), src_imname,
  trg_imname (file names in JPEGImages/<category>/);
- src_imsize, trg_imsize: [W, H, 3], as SPair writes them (3: the channels a loader reads
  after converting to RGB);
- src_kps, trg_kps: [[x, y], ...] in the original image's pixels, SPair's convention;
- src_bndbox, trg_bndbox: [x1, y1, x2, y2], around the mask where the manifest gave one,
  else the whole image (the store keeps no manifest boxes).

Left out, as pseudo-labels have no such thing: kps_ids (points are not named keypoints,
so no id matches across pairs), src_pose/trg_pose, mirror, viewpoint_variation,
scale_variation, truncation and occlusion (SPair's human-judged difficulty levels).

Loaders that take the points from the pair file read it whole (SPair's own loader in
juhongm999/hpf, CATs, DHPF, `labelgen.readers.spair.read_pairs`); those that derive image
names from the file name (`x.split('-')[1] + '.jpg'`) also need stems without '-' and JPEG
images. GeoAware-SC's `load_spair_data` reads category, src/trg_imname, src/trg_bndbox
and src/trg_imsize from here but its keypoints from ImageAnnotation/ (SPair's 30 named
keypoints per image), which pseudo-labels cannot fill.
"""

import itertools
import json
import os

import pandas as pd

from ..console import Progress
from . import Written
from .images import boxes, pair_images, place
from .selection import Selection, per_pair, points

SPLITS = {"train": "trn", "dev": "trn", "val": "val", "test": "test"}  # image split -> SPair's


def write(sel: Selection, root: str, conf, out: str, counts: pd.DataFrame) -> Written:
    """Write the pairs `counts` counts (Selection.counts, of this format's splits) into `root`, to become `out`."""
    layout = {s: [] for s in dict.fromkeys(SPLITS.values())}
    placed, ids = [], itertools.count(1)
    for split in layout:
        os.makedirs(os.path.join(root, "PairAnnotation", split))
    with Progress(int(counts["pairs"].sum()), "export spair", "pairs") as progress:
        for name, sources in sel.categories.items():
            pairs = sel.pairs(name, SPLITS)
            images = pair_images(pairs, name, sources)
            images["box"] = boxes(images)
            image = {row.image_id: row for row in images.itertuples(index=False)}
            kps = {end: per_pair(points(pairs, end), pairs) for end in ("src", "tgt")}
            rows = zip(pairs["src_image_id"].to_pylist(), pairs["tgt_image_id"].to_pylist(), pairs["split"].to_pylist())
            for i, (src, tgt, split) in enumerate(rows):
                a, b, pair_id = image[src], image[tgt], next(ids)
                stem = f"{pair_id:06d}-{os.path.splitext(a.name)[0]}-{os.path.splitext(b.name)[0]}:{name}"
                annotation = {
                    "pair_id": pair_id,
                    "src_imname": a.name,
                    "trg_imname": b.name,
                    "src_imsize": [int(a.width), int(a.height), 3],
                    "trg_imsize": [int(b.width), int(b.height), 3],
                    "src_bndbox": a.box,
                    "trg_bndbox": b.box,
                    "category": name,
                    "src_kps": kps["src"][i],
                    "trg_kps": kps["tgt"][i],
                }
                with open(os.path.join(root, "PairAnnotation", split, f"{stem}.json"), "w") as f:
                    json.dump(annotation, f)
                layout[split].append(stem)
            placed.append(images)
            progress.update(pairs.num_rows)
    os.makedirs(os.path.join(root, "Layout", "large"))
    for split, stems in layout.items():
        with open(os.path.join(root, "Layout", "large", f"{split}.txt"), "w") as f:
            f.write("".join(f"{stem}\n" for stem in stems))
    n_images = place(pd.concat(placed, ignore_index=True), root, conf.link, "spair images")
    return Written(
        sum(map(len, layout.values())),
        n_images,
        f"SPair-style loaders read {out}/PairAnnotation/<trn|val|test>/*.json, e.g. "
        f"labelgen.readers.spair.read_pairs('{out}', 'trn')",
    )
