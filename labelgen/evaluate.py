"""`python -m labelgen.evaluate [store=... run_id=...]`: label precision against truth.

Two kinds of truth:
- part truth (the rendered 3D collection, a manifest column `truth_uri`): a label is
  correct at a when its source point is visible in the target and the label lands
  within a * (the target object's bounding-box side, SPair's unit) of it. Reported
  by split (`val` is the figure to quote; defaults are chosen on `dev`), category,
  hop distance and pose gap, with the share of labels whose source point is hidden
  in the target and the mirror rate (labels from a left/right part that land on its
  twin), side by side on the same image pairs: raw nearest neighbour, mutual nearest
  neighbour, cycle check, the stored chain + vote labels, and those within a
  spherical mapper's angle (`+ sphere`: the run's own filter, or a mapper trained on
  its features); precision-yield curves of each stored signal.
- homographies (the planar demo, a column `homography`): within a * the longer
  image side; raw and cycle-checked nearest neighbours, the stored labels by hop
  distance, and the farthest pairs chained against matched directly.
"""

import io as _io
import json
import sys
from dataclasses import dataclass, field
from functools import cache

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from omegaconf import DictConfig, OmegaConf

from .chain import match_pair
from .cli import run_command
from .config import Location, StoreConf
from .errors import UsageError
from .features import FeatureCache
from .io import join, write_bytes
from .labels import Foreground, pose_gap, sphere_angles
from .manifest import read_manifest
from .metrics import Tally, at, homography_error, within
from .models import SphereMapper, load_checkpoint
from .pairing import view_rotations
from .sphere import map_image
from .store import LabelStore
from .train_sphere import resolve as resolve_sphere
from .train_sphere import wanted
from .truth import judge, load_truth
from .vote import SIGNALS


@dataclass
class EvaluateConf(StoreConf):
    run_id: str | None = None  # judge this run's own labels; default: the current labels on the latest labelling run's
    # features
    alphas: list[float] = field(default_factory=lambda: [0.05, 0.10])  # thresholds: fractions of the target's box
    # side (part truth) or longer image side
    max_pairs: int = 40  # image pairs per category and hop distance for the direct baselines
    seed: int = 0  # which pairs the direct baselines sample
    output: Location | None = None  # also write the table as JSON here
    curves: str | None = None  # part truth: draw the precision-yield curves into this PNG; default:
    # <store>/eval/<run>-<split>-curves.png
    split: str = "val"  # part truth: the split whose figures are printed (all splits go to `output`)
    sphere: str = "auto"  # part truth: the mapper of the `+ sphere` rows: an id, latest, none; auto: the latest one on
    # the run's features


default_conf = EvaluateConf


def xy(frame: pd.DataFrame, end: str) -> np.ndarray:
    return frame[[f"{end}_x", f"{end}_y"]].to_numpy(dtype=np.float64)


def direct_matches(fa: Foreground, fb: Foreground, radius: float):
    """Raw nearest neighbours of all of A's foreground in B, and the cycle-check mask."""
    tgt, keep, _ = match_pair(fa.feats, fb.feats, fa.grid, radius)
    return fa.pixels.numpy(), fb.pixels[tgt].numpy(), keep.numpy()


def run_record(store: LabelStore, run_id: str | None) -> tuple[str, FeatureCache, DictConfig, str]:
    """The run to evaluate: id, the features its labels were made on, config, manifest. Default:
    the latest committed run that holds current labels (a repeated run that labelled nothing has none)."""
    row = store.latest_run(run_id)
    if row is None:
        raise UsageError(f"store {store.uri} has no committed run {run_id or 'with current labels'} to evaluate")
    run_conf = OmegaConf.create(row["config"])
    features = FeatureCache(store.feature_cache(run_conf.features.cache), row["label_features"])
    return row["run_id"], features, run_conf, row["manifest"]


def judged(conf, run_id: str) -> str:
    return (
        f"run {run_id}" if conf.run_id else f"the current labels on the features of run {run_id} (the latest with any)"
    )


def judged_labels(store: LabelStore, run_id: str, own: bool, columns: str) -> pd.DataFrame:
    """The labels to judge: a named run's own (label_history: all it made), else the current
    labels made on that run's label features, whichever run made them."""
    con = store.connect()
    try:
        if own:
            return con.execute(f"SELECT {columns} FROM label_history WHERE run_id = ?", [run_id]).df()
        return con.execute(
            f"SELECT {columns} FROM labels WHERE run_id IN (SELECT run_id FROM runs WHERE label_features = "
            "(SELECT label_features FROM runs WHERE run_id = ?))",
            [run_id],
        ).df()
    finally:
        con.close()


def foregrounds(features: FeatureCache):
    """image id -> its Foreground from the feature cache, each read once."""
    return cache(lambda image_id: Foreground.of(features.load(image_id)))


def evaluate_homographies(conf, store: LabelStore, run_id: str, features: FeatureCache, run_conf) -> pd.DataFrame:
    """Against homographies (the planar demo)."""
    con = store.connect()
    truth = con.execute("SELECT DISTINCT image_id, homography FROM images WHERE homography IS NOT NULL").fetchall()
    con.close()
    if not truth:
        raise UsageError(f"run {run_id} has no images with a homography: there is no truth to evaluate against")
    hom = {i: np.asarray(h, dtype=np.float64).reshape(3, 3) for i, h in truth}
    labels = judged_labels(
        store, run_id, conf.run_id is not None, "category, src_image_id, tgt_image_id, src_x, src_y, tgt_x, tgt_y, hops"
    )
    fg = foregrounds(features)
    tally, rng, k = Tally(list(conf.alphas)), np.random.default_rng(conf.seed), run_conf.pairing.k
    for (category, a, b, hops), g in labels.groupby(["category", "src_image_id", "tgt_image_id", "hops"]):
        error = homography_error(hom[a], hom[b], xy(g, "src"), xy(g, "tgt"), max(fg(b).size))
        tally.add(category, f"chained hops={hops}", error, len(fg(a).feats))
    by_pair = labels.groupby(["src_image_id", "tgt_image_id"])
    pairs = labels.groupby(["category", "hops", "src_image_id", "tgt_image_id"]).size().reset_index()
    for (category, hops), g in pairs.groupby(["category", "hops"]):
        sample = g.iloc[rng.permutation(len(g))[: conf.max_pairs]]
        for a, b in zip(sample["src_image_id"], sample["tgt_image_id"]):
            src, tgt, keep = direct_matches(fg(a), fg(b), run_conf.labels.radius)
            size = max(fg(b).size)
            error = homography_error(hom[a], hom[b], src, tgt, size)
            tally.add(category, f"direct raw hops={hops}", error, len(src))
            tally.add(category, f"direct cycle hops={hops}", error[keep], len(src))
            if hops == k - 1:
                chained = by_pair.get_group((a, b))
                chained_error = homography_error(hom[a], hom[b], xy(chained, "src"), xy(chained, "tgt"), size)
                tally.add(category, "far: chained", chained_error, len(src))
                tally.add(category, "far: direct cycle", error[keep], len(src))
    result = tally.frame()
    result.attrs["run_id"] = run_id
    return result


GAP_BINS = [0, 45, 90, 135, 181]  # pose gap (geodesic degrees between the two views' rotations)
CURVE_SIGNALS = {k: lower for k, lower in SIGNALS.items() if k != "hops"}  # hops has tables of its own
KINDS = ["raw NN", "mutual NN", "NN + cycle", "chain + vote", "+ sphere"]


def pair_split(a: str, b: str) -> str:
    return a if a == b else "mixed"


def part_rows(judged: dict, meta: dict, tried: int, extra: dict | None = None) -> pd.DataFrame:
    """One row per label (its group, error, verdicts and signals), or one row that is no label
    when there is none, so that the pair's `tried` (source foreground patches) always counts once."""
    n = len(judged["hidden"])
    if n == 0:
        judged = {"error": np.full(1, np.nan), **{k: np.zeros(1, bool) for k in ("hidden", "twin_part", "mirrored")}}
        extra = {k: np.full(1, np.nan) for k in extra or {}}
    m = max(n, 1)
    verdicts = {k: judged[k] for k in ("error", "hidden", "twin_part", "mirrored")}
    frame = pd.DataFrame(
        {
            **{k: np.full(m, v) for k, v in meta.items()},
            "label": np.full(m, n > 0),
            "tried": np.zeros(m),
            **verdicts,
            **(extra or {}),
        }
    )
    frame.loc[0, "tried"] = tried
    return frame


def sphere_for(conf, store: LabelStore, run_conf, fingerprint: str):
    """The mapper of the `+ sphere` rows (None: no such rows), and whether the run's stored
    labels already passed its own spherical filter (then they are those rows)."""
    if wanted(run_conf.labels.sphere):
        return None, True
    if conf.sphere == "none":
        return None, False
    record = resolve_sphere(store, conf.sphere, fingerprint)
    return (load_checkpoint(SphereMapper, record["checkpoint"]) if record else None), False


def evaluate_parts(conf, store: LabelStore, run_id: str, features: FeatureCache, run_conf, manifest: pd.DataFrame):
    """Per-label verdicts against part truth for a sample of each group's image pairs:
    the stored labels, after a spherical filter, and the direct baselines on the same pairs."""
    images = manifest.set_index("image_id")
    # the true pose gap: the views' rotations from their truth (a run may have estimated its poses, or none)
    rotations = view_rotations(manifest) | {i: load_truth(u).R for i, u in images["truth_uri"].dropna().items()}
    labels = judged_labels(
        store,
        run_id,
        conf.run_id is not None,
        "category, src_image_id, tgt_image_id, src_x, src_y, "
        "tgt_x, tgt_y, hops, support, similarity, cycle_error, pair_error, pose_gap, confidence, sphere_angle",
    )
    if labels.empty:
        raise UsageError(f"run {run_id} has no labels to evaluate")
    fg = foregrounds(features)
    truth = lambda i: load_truth(images.at[i, "truth_uri"])  # noqa: E731
    mapper, run_filtered = sphere_for(conf, store, run_conf, features.fingerprint)
    points = cache(lambda i: map_image(mapper, fg(i).feats))
    stored_kind = "+ sphere" if run_filtered else "chain + vote"

    split = images["split"].fillna("none").to_dict()
    labels["split"] = [pair_split(split[a], split[b]) for a, b in zip(labels.src_image_id, labels.tgt_image_id)]
    # a pair's distance: its fewest hops (tuples can hold one pair at different distances)
    pairs = labels.groupby(["split", "category", "src_image_id", "tgt_image_id"])["hops"].min().reset_index()
    rng, out = np.random.default_rng(conf.seed), []
    by_pair = labels.groupby(["src_image_id", "tgt_image_id"])
    for _, g in pairs.groupby(["split", "category", "hops"]):
        for _, p in g.iloc[rng.permutation(len(g))[: conf.max_pairs]].iterrows():
            a, b = p.src_image_id, p.tgt_image_id
            fa, fb = fg(a), fg(b)
            meta = {"split": p.split, "category": p.category, "hops": p.hops, "gap": pose_gap(rotations, a, b)}
            stored = by_pair.get_group((a, b)).reset_index(drop=True)
            judged = judge(truth(a), truth(b), xy(stored, "src"), xy(stored, "tgt"))
            signals = {k: stored[k].to_numpy(dtype=float) for k in CURVE_SIGNALS}
            if mapper is not None:
                angles = sphere_angles(pa.Table.from_pandas(stored), {a: fa, b: fb}, {a: points(a), b: points(b)})
                signals["sphere_angle"] = angles.astype(float)
                kept = angles <= run_conf.labels.sphere_deg
                out.append(
                    part_rows({k: v[kept] for k, v in judged.items()}, {**meta, "kind": "+ sphere"}, len(fa.feats))
                )
            out.append(part_rows(judged, {**meta, "kind": stored_kind}, len(fa.feats), signals))
            tgt, keep, mutual = match_pair(fa.feats, fb.feats, fa.grid, run_conf.labels.radius)
            judged = judge(truth(a), truth(b), fa.pixels.numpy(), fb.pixels[tgt].numpy())
            for kind, sel in (("raw NN", torch.ones_like(keep)), ("mutual NN", mutual), ("NN + cycle", keep)):
                sel = sel.numpy()
                out.append(part_rows({k: v[sel] for k, v in judged.items()}, {**meta, "kind": kind}, len(keep)))
    return pd.concat(out, ignore_index=True), stored_kind, mapper is not None


def summarise(rows: pd.DataFrame, by: list[str], alphas) -> pd.DataFrame:
    """Per group: labels, yield, P@alpha, the hidden share and the mirror rate."""
    precision = [f"P{at(a)}" for a in alphas]
    ok = pd.DataFrame(within(rows["error"], alphas), index=rows.index, columns=precision)
    g = rows.assign(**ok).groupby(by, observed=True)
    table = pd.DataFrame(
        {
            "labels": g["label"].sum(),
            "yield": g["tried"].sum(),
            **{c: g[c].sum() for c in precision},
            "hidden": g["hidden"].sum(),
        }
    )
    for col in (*precision, "hidden"):
        table[col] = table[col] / table["labels"].where(table["labels"] > 0)
    table["yield"] = table["labels"] / table["yield"]
    twin_rows = rows[rows.twin_part].groupby(by, observed=True)["mirrored"]
    table["mirror"] = twin_rows.mean().reindex(table.index)
    return table.reset_index()


def curves(stored: pd.DataFrame, alpha: float, png: str | None) -> pd.DataFrame:
    """Precision (P@alpha) against the share of stored labels kept, ranking by each signal;
    the best operating point of each (the largest F1 of precision and recall of correct labels)."""
    points, lines, name = [], {}, f"P{at(alpha)}"
    for signal, lower in CURVE_SIGNALS.items():
        values = stored[signal].to_numpy(dtype=float)
        if np.isnan(values).all():
            continue
        order = np.argsort(values if lower else -values, kind="stable")
        ok, ranked = within(stored["error"], [alpha])[order, 0], values[order]
        kept = np.arange(1, len(ok) + 1)
        precision, recall = np.cumsum(ok) / kept, np.cumsum(ok) / max(1, ok.sum())
        f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-9)
        cuts = np.r_[np.nonzero(ranked[1:] != ranked[:-1])[0], len(ok) - 1]  # a threshold keeps all of its ties
        best = int(cuts[np.argmax(f1[cuts])])
        lines[signal] = (kept / len(ok), precision)
        points.append(
            {
                "signal": signal,
                "keep": "<=" if lower else ">=",
                "threshold": ranked[best],
                "kept": kept[best] / len(ok),
                name: precision[best],
                f"{name} all": precision[-1],
            }
        )
    if png and lines:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for signal, (x, y) in lines.items():
            ax.plot(x, y, label=signal)
        ax.set(
            xlabel="share of stored labels kept", ylabel=f"{name} (box side)", title="precision-yield, stored labels"
        )
        ax.legend()
        fig.tight_layout()
        buf = _io.BytesIO()
        fig.savefig(buf, format="png", dpi=120)
        plt.close(fig)
        write_bytes(png, buf.getvalue())
    return pd.DataFrame(points)


def show(title: str, frame: pd.DataFrame):
    print(f"\n{title}")
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


def report_parts(conf, store, run_id, features, run_conf, manifest) -> int:
    rows, stored, sphere = evaluate_parts(conf, store, run_id, features, run_conf, manifest)
    rows["kind"] = pd.Categorical(rows["kind"], KINDS)
    rows["gap"] = pd.cut(
        rows["gap"], GAP_BINS, right=False, labels=[f"{a}-{b}" for a, b in zip(GAP_BINS, GAP_BINS[1:])]
    )
    mine = rows[rows.split == conf.split]
    if mine.empty:
        raise UsageError(
            f"run {run_id} has no labelled pair of two `{conf.split}` images; choose split= among "
            f"{sorted(rows.split.unique())}"
        )
    png = conf.curves or join(store.uri, "eval", f"{run_id}-{conf.split}-curves.png")
    print(
        f"label precision of {judged(conf, run_id)} against part truth, split {conf.split} (P@a: within a * the "
        "target's box side; yield = labels / source foreground patches; hidden: source point not visible in the "
        "target; mirror: labels from a left/right part that land on its twin)"
    )
    if stored == "+ sphere":
        print(
            f"the run kept only labels within its spherical filter ({run_conf.labels.sphere}, "
            f"{run_conf.labels.sphere_deg} deg): its labels before that filter are not stored"
        )
    elif not sphere:
        print(
            f"no `+ sphere` rows: no spherical mapper for features {features.fingerprint} (sphere={conf.sphere}); "
            f"train one with `python -m labelgen.train_sphere store={store.uri} run_id={run_id}`"
        )
    alphas = list(conf.alphas)
    show("all categories, by method", summarise(mine, ["kind"], alphas))
    show("all categories, by method and hops", summarise(mine, ["kind", "hops"], alphas))
    show(f"by category ({stored})", summarise(mine[mine.kind == stored], ["category"], alphas))
    show("by pose gap, degrees", summarise(mine, ["kind", "gap"], alphas))
    best = curves(mine[(mine.kind == stored) & mine.label], max(alphas), png)
    show(f"precision-yield of the stored labels, best operating point per signal (curves: {png})", best)
    if conf.output:
        tables = {
            name: summarise(rows, ["split", "kind", *by], alphas)
            for name, by in (
                ("by_kind", []),
                ("by_kind_hops", ["hops"]),
                ("by_category", ["category"]),
                ("by_gap", ["gap"]),
            )
        }
        tables = {name: json.loads(t.to_json(orient="records")) for name, t in {**tables, "curves": best}.items()}
        with open(conf.output, "w") as f:
            json.dump({"run_id": run_id, "split": conf.split, "stored": stored, **tables}, f, indent=1)
    return 0


def report(conf) -> int:
    store = LabelStore(conf.store, conf.catalog)
    run_id, features, run_conf, manifest_uri = run_record(store, conf.run_id)
    manifest = read_manifest(manifest_uri)
    if "truth_uri" in manifest.columns:
        return report_parts(conf, store, run_id, features, run_conf, manifest)
    result = evaluate_homographies(conf, store, run_id, features, run_conf)
    pd.set_option("display.width", 200)
    print(f"label precision of {judged(conf, result.attrs['run_id'])} (yield = labels / source foreground patches)")
    print(result.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if conf.output:
        with open(conf.output, "w") as f:
            json.dump({"run_id": result.attrs["run_id"], "rows": result.to_dict(orient="records")}, f, indent=1)
    return 0


def main(argv=None) -> int:
    return run_command(default_conf, report, argv)


if __name__ == "__main__":
    sys.exit(main())
