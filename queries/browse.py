"""A page to look at labels: `python -m queries browse` writes a folder, index.html and its data.

Static, so that it needs no process to keep running: open it from file://, copy it, or
serve it with any web server (`python -m http.server -d browse`). Paged, so that its
opening cost does not grow with the store: index.html reads data/index.js (categories,
runs, counts, charts); the pairs of a category's run come in pages of `page_size`
(data/pairs/N.js), each page's labels in one file (data/labels/N.js), read when one of
its pairs opens, and a category's images in pages too (data/images/N.js). Data files are
scripts that hand their content to the page (`LG.loaded(path, data)`): browsers refuse
fetch() on file://. Writing costs a pass over the labels, a category of a run at a time.

The labels are the store's current ones (the view `labels`), judged by the `pairs`
report, so that the page colours by the same verdicts the report prints and plots.
"""

import io as _io
import json
import logging
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image

from labelgen.config import Location, StoreConf
from labelgen.console import Progress
from labelgen.errors import UsageError
from labelgen.io import read_bytes
from labelgen.store import LabelStore

from . import functions, header, reading, report_sql, run_sql

log = logging.getLogger(__name__)


@dataclass
class BrowseConf(StoreConf):
    at: int | None = None  # the store as it was at this snapshot (report `snapshots` lists them); default: the latest
    out: Location = "browse"  # the folder to write: index.html and data/; an earlier page there is replaced
    page_size: int = 50  # pairs (and images) per page; a page's labels are one file, read when one of its pairs opens
    image_size: int = 400  # the longer side of the image copies the page shows, pixels


browse_conf = BrowseConf
CHARTS = ("precision", "stage_yield", "coverage")  # reports drawn beside the pairs
BATCH = 65_536  # labels per batch read from the store

IMAGES = """
ends AS (  -- each current pair's two images, with its labels counted from either side
    SELECT run_id, category, src_image_id AS image_id, labels AS as_source, 0 AS as_target
    FROM current_pairs WHERE labels > 0
    UNION ALL
    SELECT run_id, category, tgt_image_id, 0, labels FROM current_pairs WHERE labels > 0
), shown AS (  -- those images as their pair's run saw them, numbered by file
    SELECT *, dense_rank() OVER (ORDER BY uri) - 1 AS n
    FROM (SELECT e.run_id, e.category, e.image_id, i.uri, i.width, i.height,
                 sum(e.as_source)::BIGINT AS as_source, sum(e.as_target)::BIGINT AS as_target
          FROM ends e JOIN images i USING (run_id, image_id)
          GROUP BY ALL)
)"""


def labels_sql() -> str:
    """The current labels of one run's category (variables run, category), judged by the
    `pairs` report, each with its images' numbers and sizes and its pair's number."""
    pairs = report_sql("pairs").strip().rstrip(";")
    return f"""
WITH {IMAGES}, judged AS (
    SELECT * FROM ({pairs}) p SEMI JOIN current_pairs c USING (run_id, category, src_image_id, tgt_image_id)
), numbered AS (
    SELECT j.*, s.n AS src_n, s.width AS src_w, s.height AS src_h, t.n AS tgt_n, t.width AS tgt_w, t.height AS tgt_h,
           dense_rank() OVER (ORDER BY j.src_image_id, j.tgt_image_id) - 1 AS pair_no
    FROM judged j
    JOIN shown s ON s.run_id = j.run_id AND s.image_id = j.src_image_id
    JOIN shown t ON t.run_id = j.run_id AND t.image_id = j.tgt_image_id
)
SELECT src_image_id, tgt_image_id, src_n, src_w, src_h, tgt_n, tgt_w, tgt_h,
       src_x, src_y, tgt_x, tgt_y, hops, confidence, correct, pair_no
FROM numbered
ORDER BY pair_no, src_y, src_x"""


def pages(batches, page_size: int):
    """Tables of the labels of `page_size` pairs each, from record batches ordered by pair_no."""
    held, current = [], None
    for batch in batches:
        page = batch.column("pair_no").to_numpy() // page_size
        starts = np.flatnonzero(np.r_[True, np.diff(page) != 0]) if len(page) else []
        for lo, hi in zip(starts, [*starts[1:], len(page)]):
            if page[lo] != current and held:
                yield pa.Table.from_batches(held)
                held = []
            current = page[lo]
            held.append(batch.slice(lo, hi - lo))
    if held:
        yield pa.Table.from_batches(held)


def numbers(values: pa.Array | pa.ChunkedArray, digits: int) -> list:
    """JSON-ready numbers, rounded; null as null."""
    return pc.round(values.cast(pa.float64()), digits).to_pylist()


def mean_at(column: pa.ChunkedArray, starts: np.ndarray) -> list:
    """The mean of each run of the column's values that begins at `starts`, nulls left out;
    null for a run without a value."""
    values = column.cast(pa.float64()).to_numpy(zero_copy_only=False)
    known = ~np.isnan(values)
    total = np.add.reduceat(np.where(known, values, 0.0), starts)
    count = np.add.reduceat(known.astype(int), starts)
    with np.errstate(invalid="ignore", divide="ignore"):
        return numbers(pa.array(total / count, from_pandas=True), 3)  # nan: null


def page_files(t: pa.Table) -> tuple[dict, dict]:
    """A page's pair list and its labels, column by column (labels: `start` of each pair's)."""
    pair_no = t.column("pair_no").to_numpy()
    starts = np.flatnonzero(np.r_[True, np.diff(pair_no) != 0])
    first = t.take(starts)
    hops = t.column("hops").to_numpy()
    pairs = {
        **{k: first.column(k).to_pylist() for k in ("src_image_id", "tgt_image_id", "src_n", "tgt_n")},
        **{k: first.column(k).to_pylist() for k in ("src_w", "src_h", "tgt_w", "tgt_h")},
        "labels": np.diff(np.r_[starts, len(t)]).tolist(),
        "hops_min": np.minimum.reduceat(hops, starts).tolist(),
        "hops_max": np.maximum.reduceat(hops, starts).tolist(),
        "confidence": mean_at(t["confidence"], starts),
        "correct": mean_at(t["correct"], starts),
    }
    labels = {
        "start": starts.tolist(),
        **{k: numbers(t[k], 1) for k in ("src_x", "src_y", "tgt_x", "tgt_y")},
        "hops": hops.tolist(),
        "confidence": numbers(t["confidence"], 3),
        "correct": t.column("correct").to_pylist(),
    }
    return pairs, labels


def write_data(folder: str, name: str, data) -> int:
    """data/<name>.js, which hands `data` to the page; its size in bytes."""
    path = f"data/{name}.js"
    text = f"LG.loaded({json.dumps(path)}, {json.dumps(data, separators=(',', ':'))});\n"
    os.makedirs(os.path.dirname(os.path.join(folder, path)), exist_ok=True)
    with open(os.path.join(folder, path), "w") as f:
        f.write(text)
    return len(text)


def write_labels(con, folder: str, page_size: int, total: int) -> tuple[list[dict], int]:
    """The current labels as pages, by category and run: a row per page (its category, run,
    pairs, labels, labels judged, hops), and the bytes written."""
    con.execute("SET VARIABLE src = '*'")
    con.execute("SET VARIABLE tgt = '*'")
    parts = con.execute("SELECT DISTINCT category, run_id FROM current_pairs WHERE labels > 0 ORDER BY ALL").fetchall()
    sql, written, size = labels_sql(), [], 0
    with Progress(total, "browse: labels", "labels") as progress:
        for category, run in parts:  # one at a time: the sorts and joins hold one category of one run
            con.execute("SET VARIABLE category = ?", [category])
            con.execute("SET VARIABLE run = ?", [run])
            for t in pages(con.execute(sql).fetch_record_batch(BATCH), page_size):
                pairs, labels = page_files(t)
                n = len(written)
                size += write_data(folder, f"pairs/{n}", pairs) + write_data(folder, f"labels/{n}", labels)
                written.append(
                    {
                        "category": category,
                        "run": run,
                        "pairs": len(pairs["labels"]),
                        "labels": len(t),
                        "judged": len(t) - t["correct"].null_count,
                        "hops": set(labels["hops"]),
                    }
                )
                progress.update(len(t))
    return written, size


def thumbnail(uri: str, out: str, side: int) -> str | None:
    """A JPEG copy of the image at `uri`, its longer side at most `side` (JPEGs decoded at a
    reduced size: fast); grey, and the reason, where it cannot be read."""
    try:
        image = Image.open(_io.BytesIO(read_bytes(uri)))
        image.draft("RGB", (side, side))
        image, problem = image.convert("RGB"), None
    except OSError as e:  # missing, unreadable, not an image
        image, problem = Image.new("RGB", (side, side), (128, 128, 128)), f"{uri}: {e}"
    image.thumbnail((side, side))
    image.save(out, quality=85)
    return problem


def write_images(con, folder: str, side: int) -> tuple[int, list[str]]:
    """Copies of the shown images (data/img/N.jpg): how many, and those that could not be read."""
    shown = con.execute(f"WITH {IMAGES} SELECT DISTINCT n, uri FROM shown ORDER BY n").fetchall()
    os.makedirs(os.path.join(folder, "data", "img"), exist_ok=True)
    problems = []
    with Progress(len(shown), "browse: images", "images") as progress, ThreadPoolExecutor(8) as pool:
        for job in [
            pool.submit(thumbnail, uri, os.path.join(folder, "data", "img", f"{n}.jpg"), side) for n, uri in shown
        ]:
            if problem := job.result():
                problems.append(problem)
            progress.update(1)
    return len(shown), problems


def write_gallery(con, folder: str, page_size: int) -> list[dict]:
    """Per category its images in pages (data/images/N.js): their numbers and labels from and to them."""
    gallery = con.execute(f"""
        WITH {IMAGES}
        SELECT category, image_id, max(n) AS n, sum(as_source)::BIGINT AS as_source,
               sum(as_target)::BIGINT AS as_target
        FROM shown GROUP BY ALL ORDER BY category, image_id""").fetch_arrow_table()
    categories, page = [], 0
    for category in gallery["category"].unique().to_pylist():
        rows = gallery.filter(pc.equal(gallery["category"], category))
        first = page
        for lo in range(0, len(rows), page_size):
            chunk = rows.slice(lo, page_size)
            write_data(folder, f"images/{page}", {k: chunk[k].to_pylist() for k in chunk.column_names[1:]})
            page += 1
        categories.append(dict(category=category, images=len(rows), first=first, pages=page - first))
    return categories


def write_charts(conf, folder: str) -> list[dict]:
    """The charts of the reports in CHARTS that have rows, as PNGs."""
    from .plot import chart

    os.makedirs(os.path.join(folder, "data", "charts"), exist_ok=True)
    out = []
    for name in CHARTS:
        sql = report_sql(name)
        df = run_sql(conf.store, sql, None, conf.catalog, conf.at)
        if len(df):
            about = header(sql)["about"]
            chart(df, header(sql)["plot"], f"{name}: {about}", os.path.join(folder, "data", "charts", f"{name}.png"))
            out.append(dict(name=name, about=about, file=f"data/charts/{name}.png"))
    return out


def prepare(folder: str):
    """A new or empty folder, or one that holds an earlier page, whose data goes."""
    earlier = os.path.isfile(os.path.join(folder, "data", "index.js"))
    if os.path.exists(folder) and not earlier and not (os.path.isdir(folder) and not os.listdir(folder)):
        raise UsageError(
            f"out={folder}: not a folder this command wrote (it holds other files); "
            "give a new or empty folder, or the folder of an earlier page to replace"
        )
    if earlier:
        shutil.rmtree(os.path.join(folder, "data"))
    os.makedirs(folder, exist_ok=True)


def index(store, at, page_size, written: list[dict], gallery: list[dict], charts: list[dict]) -> dict:
    """What the page opens with: per category its runs (their pages, which follow each other,
    pairs, labels and labels judged), its images and the hops of its labels."""
    runs = {}
    for page, p in enumerate(written):
        run = runs.setdefault(
            (p["category"], p["run"]), dict(run=p["run"], first=page, pages=0, pairs=0, labels=0, judged=0)
        )
        run["pages"] += 1
        for k in ("pairs", "labels", "judged"):
            run[k] += p[k]
    categories = []
    for g in gallery:
        name = g["category"]
        mine = [r for (c, _), r in runs.items() if c == name]
        categories.append(
            dict(
                name=name,
                pairs=sum(r["pairs"] for r in mine),
                labels=sum(r["labels"] for r in mine),
                images=dict(count=g["images"], first=g["first"], pages=g["pages"]),
                hops=sorted(set().union(*(p["hops"] for p in written if p["category"] == name))),
                runs=mine,
            )
        )
    return dict(
        store=str(store),
        snapshot=at,
        written=time.strftime("%Y-%m-%d %H:%M:%S"),
        page_size=page_size,
        pairs=sum(c["pairs"] for c in categories),
        labels=sum(c["labels"] for c in categories),
        categories=categories,
        charts=charts,
    )


def write_page(conf) -> str:
    """Write the page of `browse_conf` `conf`; the summary that names the file to open."""
    if conf.page_size < 1 or conf.image_size < 16:
        raise UsageError(f"page_size={conf.page_size}, image_size={conf.image_size}: give at least 1 and 16")
    t0 = time.perf_counter()
    folder = os.path.abspath(conf.out)
    store = LabelStore(conf.store, conf.catalog)
    with reading(store, conf.at) as con:
        prepare(folder)
        functions.register(con)
        at = conf.at if conf.at is not None else store.current_snapshot()
        (total,) = con.execute("SELECT coalesce(sum(labels), 0) FROM current_pairs").fetchone()
        written, size = write_labels(con, folder, conf.page_size, total)
        gallery = write_gallery(con, folder, conf.page_size)
        n_images, problems = write_images(con, folder, conf.image_size)
    charts = write_charts(conf, folder)
    page = index(store, at, conf.page_size, written, gallery, charts)
    write_data(folder, "index", page)
    for name, target in (("browse.html", "index.html"), ("browse.js", "browse.js")):
        shutil.copyfile(resources.files(__package__) / name, os.path.join(folder, target))
    for problem in problems[:3]:
        log.warning("image not read, shown grey: %s", problem)
    return (
        f"browse: the {page['labels']:,} current labels of {page['pairs']:,} pairs in {len(page['categories'])} "
        f"categories of store {store} (snapshot {at}), in pages of {conf.page_size} pairs with their "
        f"{n_images:,} images ({len(problems)} unreadable, shown grey) and {len(charts)} charts, "
        f"{size / 1e6:.1f} MB of labels, written in {time.perf_counter() - t0:.1f} s; "
        f"open {os.path.join(folder, 'index.html')} in a browser (from file:// or any web server)."
    )
