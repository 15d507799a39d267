"""Charts for reports: `-- plot: bar x=category y=labels hue=run_id`, `line ...`, or `pairs`."""

import io as _io
import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from labelgen.errors import UsageError
from labelgen.io import read_bytes  # noqa: E402


def parse(spec: str) -> tuple[str, dict[str, str]]:
    kind, *pairs = spec.split()
    return kind, dict(p.split("=", 1) for p in pairs)


def chart(df: pd.DataFrame, spec: str, title: str, out: str):
    """A bar or line chart of column y over x, one series per value of hue; rows that share
    x and hue (precision's runs, splits and kinds of truth) are averaged: a share summed is no share."""
    kind, opts = parse(spec)
    if kind == "pairs":
        return pairs(df, title, out)
    x, y, hue = opts["x"], opts["y"], opts.get("hue")
    wide = df.pivot_table(index=x, columns=hue, values=y, aggfunc="mean") if hue else df.set_index(x)[[y]]
    wide = wide.reindex(pd.unique(df[x]))  # keep the report's row order
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(wide) + 3), 4))
    wide.plot(kind=kind, ax=ax, legend=bool(hue))
    ax.set_ylabel(y)
    ax.set_title(textwrap.fill(title, 90), fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def pairs(df: pd.DataFrame, title: str, out: str, max_lines: int = 60):
    """Labels of one image pair (the report's first) as lines from the source (left) to the
    target (right); where truth is known (homography or part truth), green where the report
    judged the label correct, red otherwise; yellow where it is not."""
    if df.empty:
        raise UsageError("the pairs report returned no labels to draw")
    first = df.iloc[0]
    df = df[(df["src_image_id"] == first["src_image_id"]) & (df["tgt_image_id"] == first["tgt_image_id"])]
    src = plt.imread(_io.BytesIO(read_bytes(first["src_uri"])), format=first["src_uri"].rsplit(".", 1)[-1])
    tgt = plt.imread(_io.BytesIO(read_bytes(first["tgt_uri"])), format=first["tgt_uri"].rsplit(".", 1)[-1])
    h = max(src.shape[0], tgt.shape[0])
    canvas = np.ones((h, src.shape[1] + tgt.shape[1], 3), dtype=np.float32)
    for img, x0 in ((src, 0), (tgt, src.shape[1])):
        img = img[..., :3].astype(np.float32) / (255.0 if img.dtype == np.uint8 else 1.0)
        canvas[: img.shape[0], x0 : x0 + img.shape[1]] = img if img.ndim == 3 else img[..., None]
    sample = df.sample(min(max_lines, len(df)), random_state=0)
    fig, ax = plt.subplots(figsize=(canvas.shape[1] / 100, canvas.shape[0] / 100 + 0.4))
    ax.imshow(canvas)
    for r in sample.itertuples():
        color = "yellow" if pd.isna(getattr(r, "correct", None)) else ("lime" if r.correct else "red")
        ax.plot([r.src_x, r.tgt_x + src.shape[1]], [r.src_y, r.tgt_y], "-", color=color, lw=0.8)
        ax.plot([r.src_x, r.tgt_x + src.shape[1]], [r.src_y, r.tgt_y], "o", color=color, ms=2)
    ax.set_axis_off()
    ax.set_title(
        f"{textwrap.shorten(title, 90)}\n{first['src_image_id']} -> {first['tgt_image_id']}: {len(sample)} of "
        f"{len(df)} labels",
        fontsize=8,
    )
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
