"""`python -m queries browse`: the page's files match the store, and a real browser (Debian's
headless Chromium, driven by Selenium) opens it, shows the store's counts and draws a pair's labels."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from PIL import Image

from labelgen.store import LABEL_SCHEMA, LabelStore, images_table
from queries import report_sql, run_sql
from queries.__main__ import main

SHIFT = [1.0, 0, 10, 0, 1, 0, 0, 0, 1]  # b is a shifted 10 px right
GREEN, RED = "#2ca02c", "#d62728"  # the page's colours of a correct and a wrong label
COLOURS = {"a": (200, 100, 50), "b": (50, 100, 200), "c": (90, 160, 90), "d": (160, 90, 160), "e": (120, 120, 40)}


def label_rows(run_id, category, src, tgt, moves, confidence):
    """Labels at (10 i + 5, 20) moved by `moves[i]` px in x, with their confidences."""
    return [
        dict(run_id=run_id, category=category, src_image_id=src, tgt_image_id=tgt, src_x=10.0 * i + 5, src_y=20.0,
             tgt_x=10.0 * i + 5 + d, tgt_y=20.0, hops=1 + i % 2, cycle_error=1.0, similarity=0.8, sphere_angle=None,
             support=2, confidence=c)
        for i, (d, c) in enumerate(zip(moves, confidence))
    ]  # fmt: skip


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Category cat has homographies (truth): r1 labels a->b and b->a, r2 relabels a->b (one
    label 30 px off). Category dog has none: three pairs, judged by nothing but confidence."""
    root = tmp_path_factory.mktemp("browse")
    for name, colour in COLOURS.items():
        Image.new("RGB", (120, 90) if name == "b" else (100, 80), colour).save(root / f"{name}.png")
    images = pd.DataFrame(
        {
            "image_id": list(COLOURS),
            "category": ["cat", "cat", "dog", "dog", "dog"],
            "uri": [str(root / f"{n}.png") for n in COLOURS],
            "azimuth": 0.0,
            "width": [100, 120, 100, 100, 100],
            "height": [80, 90, 80, 80, 80],
            "n_fg": 20,
            "homography": [np.eye(3).flatten().tolist(), SHIFT, None, None, None],
        }
    )
    runs = {
        "r1": {
            "cat": label_rows("r1", "cat", "a", "b", [10, 10, 40], [0.9, 0.8, 0.3])
            + label_rows("r1", "cat", "b", "a", [-10, -10], [0.7, 0.6]),
            "dog": label_rows("r1", "dog", "c", "d", [3, 3, 3, 3], [0.1, 0.4, 0.6, 0.95])
            + label_rows("r1", "dog", "c", "e", [2, 2, 2], [0.5, 0.5, 0.5])
            + label_rows("r1", "dog", "d", "e", [1, 1], [None, 0.2]),
        },
        "r2": {"cat": label_rows("r2", "cat", "a", "b", [10, 40], [0.95, 0.85])},
    }
    store = LabelStore(str(root / "store"))
    for run_id, categories in runs.items():
        store.begin_run({"run_id": run_id, "config_hash": "h", "config": "k: 1"})
        for category, rows in categories.items():
            table = pa.Table.from_pylist(rows, schema=LABEL_SCHEMA)
            seen = images[images.category == category].assign(run_id=run_id)
            store.files(run_id).write_category(category, table, images_table(seen), {})
        store.commit(run_id, {"seeds": 20, "after_hop1": 15, "candidates": 12, "labels": 9}, [])
    return str(root / "store")


@pytest.fixture(scope="module")
def page(store, tmp_path_factory):
    """The page of `store` in pages of two pairs, and the command's output."""
    out = tmp_path_factory.mktemp("page") / "browse"
    code, printed = browse(store, out, "page_size=2")
    assert code == 0
    return out, printed


def browse(store, out, *args):
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()) as printed:
        code = main(["browse", f"store={store}", f"out={out}", *args])
    return code, printed.getvalue()


def data(folder: Path, name: str):
    """What data/<name>.js hands the page."""
    text = (folder / "data" / f"{name}.js").read_text()
    prefix = f'LG.loaded("data/{name}.js", '
    assert text.startswith(prefix) and text.endswith(");\n")
    return json.loads(text[len(prefix) : -3])


def store_counts(store) -> dict:
    sql = """SELECT category, count(DISTINCT (src_image_id, tgt_image_id)) AS pairs, count(*) AS labels
             FROM labels GROUP BY 1 ORDER BY 1"""
    return {r.category: (r.pairs, r.labels) for r in run_sql(store, sql).itertuples()}


def test_help_lists_the_keys(capsys):
    assert main(["browse", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m queries browse")
    for key in ("store=labelstore", "out=browse", "page_size=50", "image_size=400", "at=null"):
        assert key in out


def test_the_pages_hold_the_current_labels_with_the_pairs_verdicts(store, page):
    folder, printed = page
    assert f"open {folder / 'index.html'}" in printed and "13 current labels of 5 pairs in 2 categories" in printed
    index = data(folder, "index")
    counts = store_counts(store)
    assert {c["name"]: (c["pairs"], c["labels"]) for c in index["categories"]} == counts
    assert (index["pairs"], index["labels"]) == tuple(map(sum, zip(*counts.values())))
    cat, dog = index["categories"]
    assert [(r["run"], r["pairs"], r["pages"], r["judged"]) for r in cat["runs"]] == [("r1", 1, 1, 2), ("r2", 1, 1, 2)]
    assert [(r["run"], r["pairs"], r["pages"], r["judged"]) for r in dog["runs"]] == [("r1", 3, 2, 0)]
    assert dog["images"]["count"] == 3 and cat["hops"] == [1, 2]
    # r2's pair a->b: the page's verdicts are the pairs report's
    r2 = cat["runs"][1]
    pairs, labels = data(folder, f"pairs/{r2['first']}"), data(folder, f"labels/{r2['first']}")
    report = run_sql(store, report_sql("pairs"), {"run": "r2", "src": "a", "tgt": "b"})
    assert pairs["src_image_id"] == ["a"] and pairs["labels"] == [2] and pairs["correct"] == [0.5]
    assert labels["correct"] == report["correct"].tolist() and labels["src_x"] == report["src_x"].tolist()
    # dog's second page: the pair d->e, one of whose labels has no confidence
    second = dog["runs"][0]["first"] + 1
    pairs, labels = data(folder, f"pairs/{second}"), data(folder, f"labels/{second}")
    assert (pairs["src_image_id"], pairs["tgt_image_id"], pairs["confidence"]) == (["d"], ["e"], [0.2])
    assert labels["confidence"] == [None, 0.2] and labels["correct"] == [None, None]
    assert len(list((folder / "data" / "img").glob("*.jpg"))) == 5
    assert {c["name"] for c in index["charts"]} == {"precision", "stage_yield", "coverage"}


def test_pages_split_between_pairs_wherever_the_batches_split():
    from queries.browse import pages

    pair_no = [0, 0, 1, 1, 1, 2, 3, 3]
    cuts = [(0, 2), (2, 3), (3, 3), (3, 6), (6, 8)]  # at a pair, in one, empty, at a page
    batches = [pa.record_batch({"pair_no": pa.array(pair_no[lo:hi], pa.int64())}) for lo, hi in cuts]
    assert [t["pair_no"].to_pylist() for t in pages(batches, 2)] == [[0, 0, 1, 1, 1], [2, 3, 3]]


def test_an_earlier_page_is_replaced_and_other_folders_are_kept(store, page, tmp_path):
    folder, _ = page
    (folder / "data" / "pairs" / "99.js").write_text("stale")
    assert browse(store, folder, "page_size=2")[0] == 0 and not (folder / "data" / "pairs" / "99.js").exists()
    (tmp_path / "notes.txt").write_text("keep")
    code, err = main_error(store, tmp_path)
    assert code == 2 and "not a folder this command wrote" in err and (tmp_path / "notes.txt").exists()


def main_error(store, out):
    import contextlib
    import io

    with contextlib.redirect_stderr(io.StringIO()) as err:
        code = main(["browse", f"store={store}", f"out={out}"])
    return code, err.getvalue()


@pytest.fixture(scope="module")
def chromium():
    """Debian's headless Chromium through its own chromedriver (Selenium Manager, which would
    download one, stays out); skipped where not installed, unless LABELGEN_BROWSER_TESTS is set."""
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (binary and driver):
        if os.environ.get("LABELGEN_BROWSER_TESTS"):
            pytest.fail("LABELGEN_BROWSER_TESTS is set but chromium or chromedriver is not installed")
        pytest.skip("Chromium is not installed (Debian packages chromium and chromium-driver; .ci/run installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    yield browser
    browser.quit()


def test_the_page_in_chromium(chromium, store, page, tmp_path, capsys):
    """The page opens without console errors or warnings, reading only its index and first pages;
    shows the store's counts; draws a pair's labels (truth colours on screen); filters and pages."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    folder, _ = page
    wait = WebDriverWait(chromium, 10, ignored_exceptions=(StaleElementReferenceException,))  # rows are redrawn
    find, find_all = chromium.find_element, chromium.find_elements
    rows = lambda: [r.text.split()[:2] for r in find_all(By.CSS_SELECTOR, "tr.pair")]  # noqa: E731
    strokes = lambda: [line.get_attribute("stroke") for line in find_all(By.CSS_SELECTOR, "line.label")]  # noqa: E731
    number = lambda text: int(text.replace(",", ""))  # noqa: E731
    chromium.get((folder / "index.html").as_uri())
    wait.until(lambda d: rows() == [["b", "a"]])
    counts = store_counts(store)
    cell = lambda row, k: number(row.find_element(By.CLASS_NAME, k).text)  # noqa: E731
    shown = {
        r.get_attribute("data-name"): (cell(r, "pairs"), cell(r, "labels")) for r in find_all(By.CLASS_NAME, "category")
    }
    assert shown == counts
    assert number(find(By.ID, "total-pairs").text) == sum(n for n, _ in counts.values())
    assert number(find(By.ID, "total-labels").text) == sum(n for _, n in counts.values())
    loaded = chromium.execute_script("return [...cache.keys()]")  # no labels until a pair opens
    assert sorted(loaded) == ["data/images/0.js", "data/index.js", "data/pairs/0.js"]

    # cat's pairs: r1's b->a, both labels on the true shift; r2's a->b (the run filter), one 30 px off
    find(By.CSS_SELECTOR, "tr.pair").click()
    wait.until(lambda d: strokes() == [GREEN, GREEN] and find(By.ID, "pair-title").text.startswith("b → a"))
    Select(find(By.ID, "run")).select_by_value("r2")
    wait.until(lambda d: rows() == [["a", "b"]])
    find(By.CSS_SELECTOR, "tr.pair").click()
    wait.until(lambda d: strokes() == [GREEN, RED])
    wait.until(lambda d: d.execute_script("return [...document.images].every(i => i.complete && i.naturalWidth)"))
    artifacts = Path(os.environ.get("LABELGEN_ARTIFACTS") or tmp_path)
    artifacts.mkdir(parents=True, exist_ok=True)
    chromium.save_screenshot(str(artifacts / "browse.png"))
    with capsys.disabled():
        print(f"\ntest_the_page_in_chromium: screenshot {artifacts / 'browse.png'}")
    pixels = np.asarray(Image.open(artifacts / "browse.png").convert("RGB")).reshape(-1, 3).astype(int)
    for colour in (GREEN, RED):  # drawn on screen, not only in the DOM
        assert (abs(pixels - [int(colour[k : k + 2], 16) for k in (1, 3, 5)]).max(1) < 8).sum() > 20, colour

    # dog: no truth, coloured by confidence; filtered by confidence, then hops; its second page
    find(By.CSS_SELECTOR, "tr.category[data-name=dog]").click()
    wait.until(lambda d: rows() == [["c", "d"], ["c", "e"]])
    find(By.CSS_SELECTOR, "tr.pair").click()
    wait.until(lambda d: find(By.ID, "pair-labels").text == "4" and len(strokes()) == 4)
    assert not {GREEN, RED} & set(strokes())
    chromium.execute_script(
        "const r = document.getElementById('confidence'); r.value = '0.5'; r.dispatchEvent(new Event('input'))"
    )
    wait.until(lambda d: find(By.ID, "shown-lines").text == "2" and len(strokes()) == 2)  # 0.6 (1 hop), 0.95 (2)
    Select(find(By.ID, "hops")).select_by_value("2")
    wait.until(lambda d: find(By.ID, "shown-lines").text == "1" and len(strokes()) == 1)
    find(By.XPATH, "//div[@id='pairs-pager']/button[2]").click()
    wait.until(lambda d: rows() == [["d", "e"]])
    assert len(find_all(By.CSS_SELECTOR, "#gallery figure")) == 2  # dog's three images, two a page
    errors = [e for e in chromium.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    assert not errors, errors
