"""The evaluation core (labelgen.metrics) and the tables labelgen.evaluate builds on it."""

import numpy as np
import pandas as pd
import pytest

from labelgen.evaluate import CURVE_SIGNALS, curves, part_rows, summarise
from labelgen.metrics import Tally, homography_error, pck, relative_error, within
from labelgen.vote import CONFIDENCE_INPUTS, SIGNALS

SHIFT = np.array([[1.0, 0, 10], [0, 1, 0], [0, 0, 1]])  # the target view is the source shifted 10 px right


def test_errors_are_relative_to_the_size_and_a_missing_truth_is_never_correct():
    error = relative_error(np.array([[3.0, 4.0], [0.0, 0.0]]), np.array([[0.0, 0.0], [np.nan, np.nan]]), 50.0)
    assert error[0] == pytest.approx(0.1) and np.isnan(error[1])
    assert within(error, [0.05, 0.1]).tolist() == [[False, True], [False, False]]
    assert pck(error, [0.1]) == {"pck@0.10": 0.5} and np.isnan(pck(np.zeros(0), [0.1])["pck@0.10"])
    # float32 errors compare in float32, as `error <= alpha` does
    assert within(np.float32([16.0]) / np.float32(320.0), [0.05])[0, 0]


def test_homography_errors_and_the_tally_by_group():
    src = np.array([[0.0, 0.0], [20.0, 5.0]])
    error = homography_error(np.eye(3), SHIFT, src, src + [[10.0, 0.0], [14.0, 3.0]], 100.0)
    assert error == pytest.approx([0.0, 0.05])
    tally = Tally([0.01, 0.05])
    tally.add("cat", "raw", error, 4)
    tally.add("dog", "raw", error[:1], 4)
    frame = tally.frame().set_index(["category", "kind"])
    assert frame.loc[("cat", "raw")].tolist() == [2, 0.5, 0.5, 1.0]
    assert frame.loc[("ALL", "raw")].tolist() == [3, 3 / 8, 2 / 3, 1.0] and frame.index[-1][0] == "ALL"


def rows(errors, kind="chain + vote"):
    """part_rows of one image pair whose labels have these errors (nan: hidden)."""
    n = len(errors)
    judged = {
        "error": np.asarray(errors, float),
        "hidden": np.isnan(errors),
        "twin_part": np.zeros(n, bool),
        "mirrored": np.zeros(n, bool),
    }
    signals = {k: np.arange(n, dtype=float) for k in CURVE_SIGNALS}
    return part_rows(judged, {"kind": kind}, 10, signals)


def test_the_part_truth_tables_follow_the_alphas():
    labels = pd.concat([rows([0.01, 0.07, 0.15, np.nan]), rows([])], ignore_index=True)
    table = summarise(labels, ["kind"], [0.05, 0.10]).iloc[0]
    assert list(table.index) == ["kind", "labels", "yield", "P@0.05", "P@0.10", "hidden", "mirror"]
    assert (table.labels, table["yield"], table["P@0.05"], table["P@0.10"], table.hidden) == (4, 0.2, 0.25, 0.5, 0.25)
    wide = summarise(labels, ["kind"], [0.2]).iloc[0]
    assert "P@0.05" not in wide and wide["P@0.20"] == 0.75
    best = curves(labels[labels.label], 0.2, None).set_index("signal")
    assert best.at["similarity", "P@0.20 all"] == 0.75 and "P@0.10" not in best.columns


def test_one_table_of_signals():
    assert set(CURVE_SIGNALS) < set(SIGNALS) and "hops" not in CURVE_SIGNALS
    assert {k.removeprefix("log_") for k in CONFIDENCE_INPUTS} < set(SIGNALS)
    assert not SIGNALS["similarity"] and SIGNALS["cycle_error"]  # a higher similarity, a lower cycle error speak for it
