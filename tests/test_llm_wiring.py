"""The LLM components inside ACTClassifier, and what must never leak or be paid twice."""

import json
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from fake_llm import FakeLLM, answer_by_keyword, user_text
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline

from act_sklearn import (
    ACTClassifier,
    ACTLogisticRegression,
    ACTSampler,
    LLMBackend,
    LLMBatchError,
    LLMFailureWarning,
    MLLMAnnotator,
    MLLMCriticizer,
)
from act_sklearn.llm import ResponseCache

LABELS = ["cat", "dog", "bird"]
HERE = Path(__file__).parent


def _texts(n=60, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    # the fake annotator reads the first animal named; a third of the items mislead it
    noisy = rng.random(n) < 0.3
    texts = [
        f"item {i}: {'wrong ' + LABELS[(k + 1) % 3] + ' then ' if bad else ''}a {LABELS[k]} {LABELS[k]}"
        for i, (k, bad) in enumerate(zip(y, noisy))
    ]
    return np.array(texts, dtype=object), np.array(LABELS)[y]


def _act(fake, tmp_path, **sampler):
    backend = fake.backend(tmp_path)
    return ACTClassifier(
        make_pipeline(HashingVectorizer(n_features=2**10), ACTLogisticRegression()),
        annotator=MLLMAnnotator(backend, classes=LABELS),
        criticizer=MLLMCriticizer(backend, strategy="naive"),
        sampler=ACTSampler(random_state=0, **({"budget": 0.3} | sampler)),
    )


def test_one_fit_annotates_criticizes_samples_reviews_and_trains(tmp_path):
    X, y = _texts()
    fake = FakeLLM()
    act = _act(fake, tmp_path).fit(X, y)
    assert len(fake.requests) == 2 * len(X)  # one annotation and one criticism per item
    assert set(act.machine_labels_) <= set(LABELS)
    assert act.n_human_labels_ == 18 and act.reviewed_.sum() == 18
    misled = np.array(["wrong" in x for x in X])
    np.testing.assert_allclose(act.error_proba_, np.where(misled, 0.8, 0.1))
    assert act.usage_.requests == 2 * len(X)
    n_requests = len(fake.requests)
    act.predict(X), act.predict_proba(X), act.score(X, y)
    assert len(fake.requests) == n_requests  # predict makes no LLM call


def test_grid_search_over_the_sampler_pays_for_each_item_once(tmp_path):
    X, y = _texts()
    fake = FakeLLM()
    grid = {"sampler__budget": [0.2, 0.4], "sampler__threshold": [0.5, 0.9],
            "sampler__rule": ["threshold", "normalize"]}
    search = GridSearchCV(_act(fake, tmp_path), grid, cv=3).fit(X, y)
    assert len(search.cv_results_["params"]) == 8
    distinct = {json.dumps(body, sort_keys=True) for body in fake.requests}
    assert len(fake.requests) == len(distinct) == 2 * len(X)  # every request once, then the cache
    GridSearchCV(_act(fake, tmp_path), grid, cv=3).fit(X, y)
    assert len(fake.requests) == 2 * len(X)  # a second search: no call at all


def test_grid_search_with_metadata_routing(tmp_path):
    import sklearn

    X, y = _texts()
    fake = FakeLLM()
    with sklearn.config_context(enable_metadata_routing=True):
        act = _act(fake, tmp_path)
        act.estimator.steps[-1][1].set_fit_request(machine_labels=True, act_weight=True, power=True)
        search = GridSearchCV(act, {"sampler__budget": [0.2, 0.4]}, cv=2).fit(X, y)
    assert search.best_estimator_.n_human_labels_ <= 0.4 * len(X)


def test_failed_items_go_to_people_first_or_raise(tmp_path):
    X, y = _texts()
    bad = {3, 7}

    def answer(body, n):
        if any(f"item {i}:" in user_text(body) for i in bad):
            return '{"label": "unicorn"}'
        return answer_by_keyword(body)

    fake = FakeLLM(answer)
    with pytest.raises(LLMBatchError, match="2 of 60 annotate requests failed"):
        _act(fake, tmp_path).fit(X, y)
    act = _act(fake, tmp_path)
    act.set_params(annotator__on_error="skip")
    with pytest.warns(LLMFailureWarning):
        act.fit(X, y)
    assert [f["index"] for f in act.failures_] == [3, 7]
    assert all("unicorn" in f["reason"] for f in act.failures_)
    # the failed items stay in the design, reviewed first, within the budget
    assert act.reviewed_.size == 60 and act.reviewed_[[3, 7]].all()
    assert act.inclusion_proba_[[3, 7]].tolist() == [1.0, 1.0] and act.error_proba_[[3, 7]].tolist() == [1.0, 1.0]
    assert act.n_human_labels_ == act.sampler_.budget_ == 18 and act.usable_indices_.size == 60
    assert act.final_labels_[[3, 7]].tolist() == y[[3, 7]].tolist()
    assert act.label_accuracy_.errors_found >= 2  # no machine label was a wrong one, corrected
    # 58 annotations came from the cache of the first fit and the 58 criticisms are new; the two
    # items without a usable answer were never cached, so they are asked again, in each output mode
    assert act.usage_.requests == 58 + 2 * 3 and act.usage_.cache_hits == 58


def test_more_failures_than_budget_share_it_and_count_as_errors(tmp_path):
    X, y = _texts()
    bad = set(range(0, 60, 5))  # 12 of 60 items (20%) get no usable annotation

    def answer(body, n):
        if any(f"item {i}:" in user_text(body) for i in bad):
            return '{"label": "unicorn"}'
        return answer_by_keyword(body)

    act = _act(FakeLLM(answer), tmp_path, budget=6)
    act.set_params(annotator__on_error="skip")
    with pytest.warns(LLMFailureWarning):
        act.fit(X, y)
    failed = np.array(sorted(bad))
    assert act.n_human_labels_ == 6 and act.reviewed_[failed].sum() == 6  # never above the budget
    np.testing.assert_allclose(act.inclusion_proba_[failed], 6 / 12)
    assert not act.reviewed_[np.setdiff1d(np.arange(60), failed)].any()
    left = failed[~act.reviewed_[failed]]
    assert all(label is None for label in act.final_labels_[left]) and act.usable_indices_.size == 54
    # the budget went to the failures, so the other items could never be reviewed: the estimate
    # says so instead of guessing, and the reviewed failures count as errors found
    estimate = act.label_accuracy_
    assert not estimate.estimable and estimate.errors_found == 6 and "not estimable" in str(estimate)


def test_no_api_key_in_params_repr_pickles_cache_or_logs(tmp_path, monkeypatch, caplog):
    import logging

    planted = "sk-PLANTED-" + "x7" * 20
    monkeypatch.setenv("ACT_TEST_KEY", planted)
    fake = FakeLLM()
    backend = fake.backend(tmp_path, api_key_env="ACT_TEST_KEY")
    caplog.set_level(logging.DEBUG)
    annotator = MLLMAnnotator(backend, classes=LABELS).fit()
    critic = MLLMCriticizer(backend, strategy="logprob").fit()
    labels = annotator.predict(["a cat", "a dog"])
    critic.predict_error_proba(["a cat", "a dog"], labels)
    assert fake.headers[0]["authorization"] == f"Bearer {planted}"  # the key was used...
    act = _act(fake, tmp_path).fit(*_texts(20))
    places = {
        "params": repr(annotator.get_params(deep=True)) + repr(act.get_params(deep=True)),
        "repr": repr(annotator) + repr(critic) + repr(act),
        "logs": caplog.text,
        "cache": (tmp_path / "cache.sqlite").read_bytes().decode("latin-1"),
    }
    fake.headers.clear()  # the fake *server's* log of what it received is not ours to check
    places["pickle"] = "".join(
        pickle.dumps(estimator).decode("latin-1") for estimator in (annotator, critic, act)
    )
    for wal in tmp_path.glob("cache.sqlite*"):
        places["cache"] += wal.read_bytes().decode("latin-1")
    for place, text in places.items():  # ...and is nowhere else
        assert planted not in text, place
    assert "ACT_TEST_KEY" in places["params"]


def test_cache_is_safe_across_processes(tmp_path):
    script = textwrap.dedent(
        """
        import sys
        from act_sklearn.llm import ResponseCache
        cache = ResponseCache(sys.argv[1])
        for i in range(200):
            cache.put(f"{sys.argv[2]}-{i}", "m", {"i": i})
            assert cache.get(f"{sys.argv[2]}-{i}") == {"i": i}
        """
    )
    path = tmp_path / "shared.sqlite"
    writers = [
        subprocess.Popen([sys.executable, "-c", script, str(path), name]) for name in "abcd"
    ]
    assert [w.wait(timeout=120) for w in writers] == [0, 0, 0, 0]
    assert len(ResponseCache(path)) == 800


def test_opening_waits_out_a_locked_journal_mode_switch(tmp_path, monkeypatch):
    # SQLite may refuse the WAL switch at once ("database is locked") while another
    # process opens the same new file; the cache retries instead of failing the run
    import sqlite3

    from act_sklearn.llm import ResponseCache, cache

    refusals = []

    class BusyOnce:
        def __init__(self, db):
            self.db = db

        def execute(self, sql, *args):
            if sql == "PRAGMA journal_mode=WAL" and not refusals:
                refusals.append(sql)
                raise sqlite3.OperationalError("database is locked")
            return self.db.execute(sql, *args)

        def __getattr__(self, name):
            return getattr(self.db, name)

        def __enter__(self):
            return self.db.__enter__() and self

        def __exit__(self, *exc):
            return self.db.__exit__(*exc)

    real_connect = sqlite3.connect
    monkeypatch.setattr(cache.sqlite3, "connect", lambda *a, **k: BusyOnce(real_connect(*a, **k)))
    store = ResponseCache(tmp_path / "new.sqlite")
    store.put("k", "m", {"i": 1})
    assert refusals and store.get("k") == {"i": 1}
    journal = real_connect(tmp_path / "new.sqlite").execute("PRAGMA journal_mode").fetchone()[0]
    assert journal == "wal"


def test_a_killed_run_resumes_without_requesting_finished_items_again(tmp_path, monkeypatch):
    """Kill an annotation half-way (a real SIGKILL), start again, count the requests."""
    sys.path.insert(0, str(HERE.parent / "benchmarks"))
    import delay_server

    items = [f"item {i} is a {LABELS[i % 3]}" for i in range(120)]
    (tmp_path / "items.json").write_text(json.dumps(items))
    script = textwrap.dedent(
        """
        import json, sys
        from pathlib import Path
        from act_sklearn import LLMBackend, MLLMAnnotator

        url, tmp = sys.argv[1], Path(sys.argv[2])
        backend = LLMBackend(model="m", base_url=url, api_key_env="NO_KEY_NEEDED", max_concurrency=4,
                             cache_path=str(tmp / "cache.sqlite"))
        MLLMAnnotator(backend, classes=%r).fit().predict(json.loads((tmp / "items.json").read_text()))
        """
        % LABELS
    )
    with delay_server.serve_in_thread(delay=0) as url:
        # 40 answered, the next 4 held: once they have arrived, all 4 of the client's
        # slots wait on them, so exactly the 40 answers before are in the cache
        delay_server.hold_after(url, 40)
        run = subprocess.Popen([sys.executable, "-c", script, url, str(tmp_path)],
                               env={"NO_KEY_NEEDED": "x", "PYTHONPATH": ":".join(sys.path)})
        delay_server.wait_for_requests(url, 44)
        run.kill()
        run.wait()
        assert len(ResponseCache(tmp_path / "cache.sqlite")) == 40
        delay_server.reset_count(url)
        delay_server.release(url)
        backend = LLMBackend(model="m", base_url=url, api_key_env="NO_KEY_NEEDED",
                             cache_path=str(tmp_path / "cache.sqlite"))
        monkeypatch.setenv("NO_KEY_NEEDED", "x")
        annotator = MLLMAnnotator(backend, classes=LABELS).fit()
        labels = annotator.predict(items)
        assert set(labels) <= set(LABELS) and len(labels) == len(items)
        assert delay_server.request_count(url) == annotator.usage_.requests == len(items) - 40  # only the unfinished
