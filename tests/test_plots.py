"""Report plots: valid PNGs written atomically, the ECE they draw, clear errors, and a light import."""

import subprocess
import sys

import numpy as np
import pytest
from matplotlib.image import imread

from act_sklearn.workflow.plots import plot_aqg_curve, plot_calibration
from act_sklearn.stats import aqg_curve, expected_calibration_error

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PIXELS = (400, 600)  # 6 x 4 inches at 100 dpi, as (rows, columns)


@pytest.fixture
def job():
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 3, 300)
    is_error = rng.random(300) < 0.25
    machine = np.where(is_error, (gold + 1) % 3, gold)
    error_proba = np.clip(0.5 * is_error + 0.5 * rng.random(300), 0, 1)
    return gold, machine, is_error, error_proba


def assert_png(path):
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    assert imread(path).shape[:2] == PIXELS


def assert_no_temporary_files(folder):
    assert [p.name for p in folder.iterdir() if p.name.endswith(".tmp")] == []


def test_aqg_curve_writes_a_png_over_an_older_file(job, tmp_path):
    gold, machine, _, error_proba = job
    curve = aqg_curve(gold, machine, error_proba, [10, 30, 60], random_state=0)
    (tmp_path / "aqg.png").write_bytes(b"an older report")
    path = plot_aqg_curve(tmp_path / "aqg.png", curve, n_items=300, run_budget=30, title="a run")
    assert path == tmp_path / "aqg.png"
    assert_png(path)
    assert_no_temporary_files(tmp_path)


def test_aqg_curve_draws_named_curves_into_a_new_folder(job, tmp_path):
    gold, machine, _, error_proba = job
    budgets = [60, 10, 30]  # unsorted on purpose
    curves = {
        "criticizer": aqg_curve(gold, machine, error_proba, budgets, random_state=0),
        "random review": aqg_curve(gold, machine, np.full(300, 0.5), budgets, random_state=0),
    }
    path = plot_aqg_curve(tmp_path / "report" / "aqg.png", curves, n_items=300)
    assert_png(path)
    assert_no_temporary_files(path.parent)


def test_calibration_ece_equals_the_stats_function(job, tmp_path):
    gold, machine, is_error, error_proba = job
    ece = plot_calibration(tmp_path / "calibration.png", error_proba, is_error, n_bins=8)
    assert ece == pytest.approx(expected_calibration_error(gold, machine, error_proba, n_bins=8), abs=1e-12)
    assert_png(tmp_path / "calibration.png")
    assert_no_temporary_files(tmp_path)


def test_calibration_with_unit_weights_matches_unweighted(job, tmp_path):
    gold, machine, is_error, error_proba = job
    ece = plot_calibration(tmp_path / "calibration.png", error_proba, is_error, weights=np.ones(300))
    assert ece == pytest.approx(expected_calibration_error(gold, machine, error_proba), abs=1e-12)


def test_weighted_ece_by_hand(tmp_path):
    error_proba = [0.1, 0.3, 0.8, 0.9]
    is_error = [0, 1, 1, 0]
    weights = [1.0, 3.0, 2.0, 2.0]
    # bin [0, .5): weight 4, predicted (0.1 + 0.9) / 4 = 0.25, observed 3 / 4 = 0.75, gap 0.5
    # bin [.5, 1]: weight 4, predicted (1.6 + 1.8) / 4 = 0.85, observed 2 / 4 = 0.5, gap 0.35
    expected = (4 * 0.5 + 4 * 0.35) / 8
    ece = plot_calibration(tmp_path / "c.png", error_proba, is_error, weights=weights, n_bins=2)
    assert ece == pytest.approx(expected)


def test_calibration_handles_empty_bins_and_probabilities_of_one(tmp_path):
    ece = plot_calibration(tmp_path / "c.png", [1.0, 1.0, 0.0], [True, False, False], n_bins=10)
    assert ece == pytest.approx(expected_calibration_error([1, 0, 0], [0, 0, 0], [1.0, 1.0, 0.0]))
    assert_png(tmp_path / "c.png")


@pytest.mark.parametrize(
    ("error_proba", "is_error", "weights", "message"),
    [
        ([0.1, 0.2], [0], None, "one entry per error_proba"),
        ([], [], None, "empty"),
        ([0.1, 1.5], [0, 1], None, r"\[0, 1\]"),
        ([0.1, np.nan], [0, 1], None, "NaN"),
        ([0.1, 0.2], [0, 2], None, "0/1"),
        ([0.1, 0.2], [0, 1], [1.0], "one entry per error_proba"),
        ([0.1, 0.2], [0, 1], [1.0, -1.0], "non-negative"),
        ([0.1, 0.2], [0, 1], [0.0, 0.0], "not all zero"),
        ([0.1, 0.2], [0, 1], [1.0, np.inf], "finite"),
    ],
)
def test_calibration_rejects_bad_input(tmp_path, error_proba, is_error, weights, message):
    with pytest.raises(ValueError, match=message):
        plot_calibration(tmp_path / "c.png", error_proba, is_error, weights=weights)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("n_bins", [0, 2.5, True])
def test_calibration_rejects_bad_n_bins(tmp_path, n_bins):
    with pytest.raises(ValueError, match="n_bins"):
        plot_calibration(tmp_path / "c.png", [0.1], [0], n_bins=n_bins)


GOOD_CURVE = {"n_reviewed": np.array([10, 20]), "aqg": np.array([0.01, 0.02]), "budget_efficiency": np.ones(2)}


@pytest.mark.parametrize(
    ("curves", "kwargs", "message"),
    [
        ({}, {}, "non-empty"),
        ({"n_reviewed": [1], "aqg": [0.0]}, {}, "budget_efficiency"),
        ({"random": {"n_reviewed": [1], "aqg": [0.0]}}, {}, "'random'"),
        ({"n_reviewed": [], "aqg": [], "budget_efficiency": []}, {}, "empty"),
        ({**GOOD_CURVE, "aqg": [0.1]}, {}, "one per budget"),
        (GOOD_CURVE, {"n_items": 15}, "n_reviewed outside"),
        (GOOD_CURVE, {"n_items": 0}, "n_items"),
        (GOOD_CURVE, {"run_budget": 500}, "run_budget"),
    ],
)
def test_aqg_curve_rejects_bad_input(tmp_path, curves, kwargs, message):
    with pytest.raises(ValueError, match=message):
        plot_aqg_curve(tmp_path / "aqg.png", curves, **{"n_items": 100, **kwargs})
    assert list(tmp_path.iterdir()) == []


def test_only_png_paths_are_accepted(tmp_path):
    with pytest.raises(ValueError, match=r"\.png"):
        plot_aqg_curve(tmp_path / "aqg.pdf", GOOD_CURVE, n_items=100)
    with pytest.raises(ValueError, match=r"\.png"):
        plot_calibration(tmp_path / "c.svg", [0.1], [0])


def test_a_failed_save_leaves_no_temporary_file(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", fail)
    with pytest.raises(OSError, match="disk full"):
        plot_calibration(tmp_path / "c.png", [0.1, 0.9], [0, 1])
    assert list(tmp_path.iterdir()) == []


def test_plotting_opens_no_pyplot_figures(tmp_path):
    # pyplot would pick a backend and keep figures open in the caller's notebook or server
    pyplot_was_imported = "matplotlib.pyplot" in sys.modules
    plot_calibration(tmp_path / "c.png", [0.1, 0.9], [0, 1])
    assert ("matplotlib.pyplot" in sys.modules) == pyplot_was_imported
    from matplotlib._pylab_helpers import Gcf

    assert Gcf.get_num_fig_managers() == 0


def test_importing_act_sklearn_does_not_import_matplotlib():
    code = "import act_sklearn, sys; assert 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
