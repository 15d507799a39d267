"""Matching quality of raw backbone features or an adapter, by window soft-argmax.

- `pseudo_pck`: against held-out pseudo-labels (pairs of two held-out images), the
  model-selection metric when there is no ground truth.
- `cycle_consistency`: the share of held-out source cells whose nearest target match maps
  back to them, the truth-free score that promotes a model (pseudo-labels favour the
  features whose chains made them; this favours none).
- `truth_pck`: against the truth where homographies are known (the demo): query
  points are the source's foreground cells whose true position falls on the
  target's foreground; pairs split into near and far by pose gap.
- `keypoint_pck`: SPair-style, against keypoints (SPair-71k, or a rendered collection's).
PCK@a (labelgen.metrics): within a * (the longer side of the target image; of the target's
bounding box for keypoints) of the reference position.
"""

import posixpath
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from omegaconf import OmegaConf

from labelgen.chain import match_pair
from labelgen.cli import run_command
from labelgen.config import Location, StoreConf
from labelgen.errors import UsageError
from labelgen.features import FLIPPED
from labelgen.geometry import transfer
from labelgen.io import exists, join
from labelgen.labels import pose_gap
from labelgen.manifest import read_manifest
from labelgen.metrics import at, pck, relative_error, within
from labelgen.models import Adapter, load_checkpoint
from labelgen.pairing import view_rotations
from labelgen.readers.spair import KeypointPair, read_pairs
from labelgen.store import LabelStore
from labelgen.synthetic.collection import read_keypoints
from labelgen.truth import PartTruth

from .data import FeatureBank, LabelData, Pair, load_label_data
from .losses import sample, window_soft_argmax
from .source import resolve_source


@dataclass
class EvalConf:
    window: int = 7  # window soft-argmax: (2w+1)^2 cells around the best match
    temperature: float = 0.02  # of that softmax
    alphas: list[float] = field(default_factory=lambda: [0.05, 0.10])  # PCK thresholds, fractions of the longer image
    # side (of the box side for keypoints)
    far_deg: float = 60.0  # pose gap (degrees of rotation) from which a pair counts as far
    flip_align: bool = False  # GeoAware test-time pose alignment: match the mirrored source when closer
    keypoint_pairs: int = 50  # per category: held-out keypoint pairs of a rendered collection (different instances)
    cycle_pairs: int = 300  # held-out image pairs the promotion score (cycle consistency) is measured on
    cycle_radius: float = 1.0  # cells: a source cell's nearest target match must map back this close


default_conf = EvalConf


class Matcher:
    """Features of the raw backbone (adapter None) or of an adapter, per image, cached."""

    def __init__(self, bank: FeatureBank, adapter: Adapter | None, conf):
        self.bank, self.adapter, self.conf, self._feats = bank, adapter, conf, {}

    @torch.inference_mode()
    def feats(self, image_id: str) -> torch.Tensor:
        if image_id not in self._feats:
            grid = self.bank.grid(image_id)
            self._feats[image_id] = grid if self.adapter is None else self.adapter.eval()(grid[None])[0]
        return self._feats[image_id]

    def foreground(self, image_id: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, C) features of the image's foreground cells and their (N, 2) grid (col, row)."""
        f = self.bank(image_id)
        cells = f.fg_index()
        return self.feats(image_id).flatten(1)[:, cells].T, f.cell_xy(cells)

    @torch.inference_mode()
    def instance_distance(self, src: str, tgt: str) -> float:
        """Mean over the source's foreground of the distance (1 - cosine) to its nearest
        target foreground feature: low when the two are seen in a similar pose."""
        return float((1 - (self.foreground(src)[0] @ self.foreground(tgt)[0].T).amax(dim=1)).mean())

    @torch.inference_mode()
    def cycle_consistency(self, src: str, tgt: str, radius: float) -> float:
        """The share of the source's foreground cells whose nearest target cell has its own
        nearest source cell within `radius` cells of them (the chains' cycle check)."""
        (fs, grid), (ft, _) = self.foreground(src), self.foreground(tgt)
        return float(match_pair(fs, ft, grid, radius)[1].float().mean())

    @torch.inference_mode()
    def predict(self, src: str, tgt: str, src_xy_px: np.ndarray) -> np.ndarray:
        """Target pixels for source pixels; with flip_align, through the mirrored source
        when that one is closer to the target."""
        if self.conf.flip_align and self.instance_distance(src + FLIPPED, tgt) < self.instance_distance(src, tgt):
            src, src_xy_px = self.bank.view(src, src_xy_px, flip=True)
        q = sample(self.feats(src), self.bank.to_grid(src, src_xy_px))
        grid_xy = window_soft_argmax(q, self.feats(tgt), self.conf.window, self.conf.temperature)
        return self.bank(tgt).to_pixels(grid_xy).numpy()


def image_side(f) -> int:
    """The longer side of an image, the unit of PCK without keypoints."""
    return max(f.width, f.height)


def pseudo_pck(matcher: Matcher, pairs: list[Pair], alphas) -> dict[str, float]:
    """PCK against held-out pseudo-labels."""
    errs = [
        relative_error(matcher.predict(p.src, p.tgt, p.src_xy), p.tgt_xy, image_side(matcher.bank(p.tgt)))
        for p in pairs
    ]
    return pck(np.concatenate(errs) if errs else np.zeros(0), alphas)


def cycle_score(matcher: Matcher, pairs: list[Pair], conf, seed: int = 0) -> float:
    """Cycle consistency of a model's matches, averaged over (at most conf.cycle_pairs) held-out
    image pairs: needs no truth, and no model's chains made it (nan without pairs)."""
    distinct = sorted({(p.src, p.tgt) for p in pairs})
    chosen = [distinct[i] for i in np.random.default_rng(seed).permutation(len(distinct))[: conf.cycle_pairs]]
    return (
        float(np.mean([matcher.cycle_consistency(a, b, conf.cycle_radius) for a, b in chosen]))
        if chosen
        else float("nan")
    )


def truth_pairs(data: LabelData) -> list[tuple[str, str, float]]:
    """Ordered pairs of held-out images of one category with known truth, and their pose gap
    (the labels' geodesic one)."""
    imgs = data.images[(data.images["split"] == data.val_split) & data.images["homography"].notna()]
    rotations = view_rotations(imgs.rename_axis("image_id").reset_index())
    return [
        (a, b, pose_gap(rotations, a, b))
        for _, g in imgs.groupby("category")
        for a in g.index
        for b in g.index
        if a != b
    ]


def truth_pck(matcher: Matcher, data: LabelData, conf) -> dict[str, float]:
    """PCK against the true homographies on held-out image pairs, near and far."""
    hom = {i: np.asarray(h, dtype=np.float64).reshape(3, 3) for i, h in data.images["homography"].dropna().items()}
    tally = {"near": [], "far": []}
    for a, b, gap in truth_pairs(data):
        fa, fb = matcher.bank(a), matcher.bank(b)
        src = fa.to_pixels(fa.cell_xy(fa.fg_index())).numpy()
        true = transfer(hom[a], hom[b], src)
        ok = fb.on_foreground(true)  # the true position lies on the target's object
        if not ok.any():
            continue
        err = relative_error(matcher.predict(a, b, src[ok]), true[ok], image_side(fb))
        tally["far" if gap >= conf.far_deg else "near"].append(err)
    out = {}
    for kind, errs in tally.items():
        err = np.concatenate(errs) if errs else np.zeros(0)
        out.update({f"{kind}_{k}": v for k, v in pck(err, conf.alphas).items()})
        out[f"{kind}_points"] = len(err)
    return out


def keypoint_pck(matcher: Matcher, pairs, alphas) -> pd.DataFrame:
    """SPair-style PCK on keypoint pairs: threshold a * max side of the target bounding box;
    per keypoint (all keypoints pooled) and per image (mean over pairs), per category and ALL;
    `geo` columns for the geometry-aware subset where the pairs mark it."""
    rows = []
    for p in pairs:
        visible = (
            np.isfinite(p.src_kps).all(1)
            & np.isfinite(p.tgt_kps).all(1)
            & (p.src_kps >= 0).all(1)
            & (p.tgt_kps >= 0).all(1)
        )
        if not visible.any():
            continue
        pred = matcher.predict(p.src, p.tgt, p.src_kps[visible].astype(np.float32))
        side = max(p.tgt_bbox[2] - p.tgt_bbox[0], p.tgt_bbox[3] - p.tgt_bbox[1])
        ok = within(relative_error(pred, p.tgt_kps[visible], side), alphas)
        geo = p.geo[visible] if p.geo is not None else np.zeros(len(ok), bool)
        rows.append(
            {
                "category": p.category,
                "n": len(ok),
                "n_geo": int(geo.sum()),
                **dict(zip(alphas, ok.sum(0))),
                **{("geo", a): n for a, n in zip(alphas, ok[geo].sum(0))},
            }
        )
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    out = []
    for category, g in [*frame.groupby("category"), ("ALL", frame)]:
        rec = {"category": category, "pairs": len(g), "keypoints": int(g["n"].sum())}
        for a in alphas:
            rec[f"pck{at(a)} per kpt"] = g[a].sum() / g["n"].sum()
            rec[f"pck{at(a)} per img"] = (g[a] / g["n"]).mean()
        if g["n_geo"].sum():
            rec["geo keypoints"] = int(g["n_geo"].sum())
            for a in alphas:
                rec[f"geo pck{at(a)} per kpt"] = g[("geo", a)].sum() / g["n_geo"].sum()
        out.append(rec)
    return pd.DataFrame(out)


def collection_keypoint_pairs(
    data: LabelData, per_category: int, seed: int = 0, held_out: bool = True
) -> list[KeypointPair]:
    """Keypoint pairs of two held-out views (`held_out=False`: two training views) of one
    category showing different instances, from a rendered collection (keypoints.parquet
    beside its manifest). A keypoint counts where both views see it; `geo` marks those
    whose left/right twin (the file's `twin` column) the target sees too."""
    rng, pairs = np.random.default_rng(seed), []
    for uri in data.manifests:
        kp_uri = join(posixpath.dirname(uri), "keypoints.parquet")
        if not exists(kp_uri):
            continue
        manifest = read_manifest(uri)
        split = manifest["split"] == data.val_split
        views = manifest[(split if held_out else ~split) & manifest["image_id"].isin(data.images.index)].set_index(
            "image_id"
        )
        kps = read_keypoints(kp_uri)
        for category, g in views.groupby("category"):
            of = kps[kps["category"] == category]
            names, twin = sorted(of["name"].unique()), dict(zip(of["name"], of["twin"]))
            seen = kps[kps["image_id"].isin(g.index)].pivot(index="image_id", columns="name", values="visible")
            seen = seen.reindex(columns=names).fillna(False).astype(bool)
            xy = {c: kps.pivot(index="image_id", columns="name", values=c).reindex(columns=names) for c in ("x", "y")}
            twins = np.asarray([names.index(twin[n]) if twin[n] in names else -1 for n in names])
            candidates = [(a, b) for a in g.index for b in g.index if g.at[a, "instance"] != g.at[b, "instance"]]
            boxes = {}  # target image -> its object's box, from the truth file, once
            for k in rng.permutation(len(candidates))[:per_category]:
                a, b = candidates[k]
                both = seen.loc[a].to_numpy() & seen.loc[b].to_numpy()
                kp = {i: np.where(both[:, None], np.stack([xy["x"].loc[i], xy["y"].loc[i]], 1), np.nan) for i in (a, b)}
                if b not in boxes:
                    boxes[b] = PartTruth.load(g.at[b, "truth_uri"]).box()
                geo = both & (twins >= 0) & seen.loc[b].to_numpy()[np.maximum(twins, 0)]
                pairs.append(KeypointPair(category, a, b, kp[a], kp[b], boxes[b], names, geo))
    return pairs


def keypoint_metrics(bank: FeatureBank, model, pairs: list[KeypointPair], conf, aligned: bool) -> dict[str, float]:
    """ALL-category keypoint PCK per keypoint, also on the geometry-aware subset, without and
    (`aligned`: the mirrored features are cached) with test-time pose alignment."""
    out = {}
    for flip in (False, True) if aligned else (False,):
        table = keypoint_pck(Matcher(bank, model, OmegaConf.merge(conf, {"flip_align": flip})), pairs, conf.alphas)
        if table.empty:
            continue
        total = table[table["category"] == "ALL"].iloc[0]
        tag = "kpt_aligned" if flip else "kpt"
        for a in conf.alphas:
            out[f"{tag}_pck{at(a)}"] = float(total[f"pck{at(a)} per kpt"])
            out[f"{tag}_geo_pck{at(a)}"] = float(total.get(f"geo pck{at(a)} per kpt", np.nan))
    return out


@dataclass
class CompareConf(StoreConf):
    model: str = "latest"  # latest (the last one trained, promoted or not) | promoted | a model id; the raw backbone
    # is always evaluated beside it
    spair: Location | None = None  # an SPair-71k folder: evaluate on its pairs (features must be in the store's cache)
    split: str = "test"  # the SPair-71k pair split, with spair=
    eval: EvalConf = field(default_factory=EvalConf)
    val_split: str = "val"  # images of this manifest split are held out


main_conf = CompareConf


def compare(data: LabelData, models: dict[str, Adapter | None], conf, seed: int = 0) -> dict[str, dict[str, float]]:
    """Each model (None: the raw backbone) on the same held-out data: PCK against held-out
    pseudo-labels, the cycle consistency that decides promotion, PCK against homographies where
    known, and keypoint PCK of held-out views and of training views (never trained on: reported
    beside the truth-free score that decides)."""
    bank = FeatureBank(data.features)
    keypoints = collection_keypoint_pairs(data, conf.keypoint_pairs, seed)
    train_keypoints = collection_keypoint_pairs(data, conf.keypoint_pairs, seed, held_out=False)
    out = {}
    for name, model in models.items():
        matcher = Matcher(bank, model, conf)
        metrics = {f"val_{k}": v for k, v in pseudo_pck(matcher, data.val, conf.alphas).items()}
        metrics["val_cycle"] = cycle_score(matcher, data.val, conf, seed)
        if data.images["homography"].notna().any():
            metrics.update({f"truth_{k}": v for k, v in truth_pck(matcher, data, conf).items()})
        if keypoints:
            metrics.update(keypoint_metrics(bank, model, keypoints, conf, data.flips))
        if train_keypoints:
            train = keypoint_metrics(bank, model, train_keypoints, conf, aligned=False)
            metrics.update({f"train_{k}": v for k, v in train.items()})
        out[name] = metrics
    return out


def compare_models(conf) -> int:
    """Raw backbone vs an adapter, on SPair pairs or on the store's held-out data."""
    store = LabelStore(conf.store, conf.catalog)
    record = store.model(conf.model)
    if record is None:
        raise UsageError(
            f"model={conf.model}: no such model in {store}; train one with `python -m trainer.train`, "
            "or see `python -m queries sql 'SELECT * FROM models'`"
        )
    print(f"model {record['model_id']} ({record['status']}: {record.get('reason', '')})")
    adapter = load_checkpoint(Adapter, record["checkpoint"])
    source = resolve_source(
        OmegaConf.create(
            {"store": conf.store, "catalog": conf.catalog, "runs": record["label_runs"], "snapshot": record["snapshot"]}
        )
    )  # the labels the model saw
    data = load_label_data(source, conf.val_split)
    models = {"raw": None, record["model_id"]: adapter}
    if conf.spair:
        bank, pairs = FeatureBank(data.features), read_pairs(conf.spair, conf.split)
        tables = [
            keypoint_pck(Matcher(bank, model, conf.eval), pairs, conf.eval.alphas).assign(model=name)
            for name, model in models.items()
        ]
    else:
        compared = compare(data, models, conf.eval)
        tables = [pd.DataFrame([metrics]).assign(model=name) for name, metrics in compared.items()]
    with pd.option_context("display.width", 200, "display.max_columns", 50):
        print(pd.concat(tables, ignore_index=True).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0


def main(argv=None) -> int:
    """`python -m trainer.evaluate [model=ID] [spair=/data/SPair-71k]`: raw backbone vs adapter."""
    return run_command(main_conf, compare_models, argv)


if __name__ == "__main__":
    raise SystemExit(main())
