"""Model selection on a cluster: GridSearchCV under joblib's Dask backend gives the n_jobs=1 results.

The pattern of the README: annotate and criticize once, keep the arrays, and search over the precomputed
``machine_labels`` and ``error_proba`` (fit parameters, split per fold by scikit-learn). The classifier in the
search carries an LLM annotator and criticizer pointed at a closed local port, with no retries and no cache:
had any worker called them, the fit would raise (``error_score="raise"``) instead of scoring.
"""

import os

import joblib
import numpy as np
from conftest import require_extra

require_extra("dask.distributed", "dask")  # before the imports that need it: skip (fail on CI) without the extra
from dask.distributed import Client, LocalCluster, get_task_stream  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402

from act_sklearn import ACTClassifier, ACTLogisticRegression, ACTSampler, LLMBackend, MLLMAnnotator, MLLMCriticizer  # noqa: E402,E501

# a sampler parameter, a rule and an estimator parameter: 8 candidates, 24 fits
GRID = {"sampler__budget": [0.1, 0.3], "sampler__rule": ["threshold", "sigmoid"], "estimator__C": [0.1, 1.0]}


def _digits_with_machine_labels():
    X, y = load_digits(return_X_y=True)
    X, y = X[:900] / 16.0, y[:900]
    rng = np.random.default_rng(0)
    wrong = rng.random(y.size) < 0.25  # a quarter of the machine labels are wrong
    machine = np.where(wrong, (y + rng.integers(1, 10, y.size)) % 10, y)
    error_proba = np.clip(0.55 * wrong + 0.45 * rng.random(y.size), 0.0, 1.0)  # a noisy critic
    return X, y, machine, error_proba


def _search(n_jobs):
    unreachable = LLMBackend(base_url="http://127.0.0.1:9/v1", max_retries=0, timeout=1.0, cache_path=False)
    act = ACTClassifier(
        ACTLogisticRegression(max_iter=200),
        annotator=MLLMAnnotator(unreachable, classes=list(range(10))),
        criticizer=MLLMCriticizer(unreachable, classes=list(range(10))),
        sampler=ACTSampler(explore=0.1, random_state=0),
    )
    return GridSearchCV(act, GRID, cv=3, n_jobs=n_jobs, error_score="raise")


def test_grid_search_on_a_dask_cluster_matches_n_jobs_1():
    X, y, machine, error_proba = _digits_with_machine_labels()
    local = _search(n_jobs=1).fit(X, y, machine_labels=machine, error_proba=error_proba)

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    ) as cluster, Client(cluster) as client:
        worker_pids = client.run(os.getpid)
        assert len(worker_pids) == 2 and os.getpid() not in worker_pids.values()
        with get_task_stream(client) as stream, joblib.parallel_backend("dask"):
            remote = _search(n_jobs=-1).fit(X, y, machine_labels=machine, error_proba=error_proba)
        # the fits ran as tasks on the cluster's two worker processes, not in this process
        ran_on = {task["worker"] for task in stream.data}
        assert stream.data and ran_on <= set(worker_pids)

    assert len(local.cv_results_["params"]) == 8 and remote.cv_results_["params"] == local.cv_results_["params"]
    assert remote.best_params_ == local.best_params_ and remote.best_index_ == local.best_index_
    for key in ["mean_test_score", "std_test_score", "rank_test_score"] + [f"split{i}_test_score" for i in range(3)]:
        np.testing.assert_array_equal(remote.cv_results_[key], local.cv_results_[key], err_msg=key)
    assert np.unique(local.cv_results_["mean_test_score"]).size > 1  # the grid's settings do differ
    # the refit best model (in this process) is the same model, and it did not call the LLM either
    best, best_local = remote.best_estimator_, local.best_estimator_
    np.testing.assert_array_equal(best.reviewed_, best_local.reviewed_)
    np.testing.assert_array_equal(best.estimator_.coef_, best_local.estimator_.coef_)
    assert best.usage_.requests == 0 and not hasattr(best, "annotator_") and not hasattr(best, "criticizer_")
