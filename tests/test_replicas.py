"""Several replicas behind one backend: least outstanding first, a dead replica left out, one cache.

The servers are ``benchmarks/delay_server.py`` processes on loopback; a replica
is stopped at a known point (it holds its later requests until the test has
seen one arrive), never after a sleep.
"""

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from act_sklearn import LLMBackend, MLLMAnnotator
from act_sklearn.llm import run_requests
from act_sklearn.llm.replicas import COOLDOWN, EJECT_AFTER, ReplicaPool

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import delay_server  # noqa: E402

LABELS = ["positive", "negative", "neutral"]


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_pool_sends_to_the_replica_with_fewest_outstanding_and_rotates_ties():
    pool = ReplicaPool(["a", "b", "c"], clock=Clock())
    first = [pool.acquire().url for _ in range(3)]
    assert sorted(first) == ["a", "b", "c"]  # one each before anyone gets a second
    busy = pool.replicas[0]
    for replica in pool.replicas[1:]:
        pool.release(replica, ok=True)
    assert busy.outstanding == 1
    assert {pool.acquire().url, pool.acquire().url} == {"b", "c"}  # "a" still has one in flight


def test_pool_leaves_a_refusing_replica_out_for_a_cooldown_that_doubles():
    clock = Clock()
    pool = ReplicaPool(["a", "b"], clock=clock)
    a, b = pool.replicas
    pool.acquire()  # a
    pool.release(a, ok=False, refused=True)
    assert [pool.acquire().url for _ in range(4)] == ["b"] * 4
    assert not pool.another_available(b) and pool.another_available(a)
    clock.now = COOLDOWN  # back after the cooldown...
    assert pool.acquire() is a
    pool.release(a, ok=False, refused=True)  # ...refuses again: out twice as long
    clock.now += COOLDOWN * 1.5
    assert pool.acquire() is b
    clock.now += COOLDOWN
    assert pool.acquire() is a
    pool.release(a, ok=True)  # one success: fully back
    assert a.out_until == 0 and a.ejections == 0


def test_pool_ejects_after_failures_in_a_row_and_never_strands_requests():
    clock = Clock()
    pool = ReplicaPool(["a", "b"], clock=clock)
    a, b = pool.replicas
    for _ in range(EJECT_AFTER):
        a.outstanding += 1
        pool.release(a, ok=False)
    assert a.out_until > clock.now
    b.out_until = a.out_until + 5  # both out: the one due back first still gets the request
    assert pool.acquire() is a
    single = ReplicaPool(["only"], clock=clock)
    for _ in range(10):
        replica = single.acquire()
        single.release(replica, ok=False, refused=True)
    assert single.replicas[0].out_until == 0  # a lone replica is never left out


def test_backend_validates_replica_lists():
    assert LLMBackend(base_url=["http://127.0.0.1:1/v1", "http://127.0.0.1:2/v1"]).replicas == (
        "http://127.0.0.1:1/v1", "http://127.0.0.1:2/v1")
    with pytest.raises(ValueError, match="twice"):
        LLMBackend(base_url=["http://127.0.0.1:1/v1"] * 2)
    with pytest.raises(ValueError, match="one or more"):
        LLMBackend(base_url=[])
    with pytest.raises(ValueError, match="one base_url"):
        LLMBackend(base_url=["http://127.0.0.1:1/v1", "http://127.0.0.1:2/v1"], mode="batch")


def _requests(n):
    return [{"messages": [{"role": "user", "content": f"review number {i}: fine"}], "max_tokens": 8}
            for i in range(n)]


def test_a_replica_stopped_half_way_every_item_answered_once(tmp_path):
    n, answered_by_a = 120, 20
    a = delay_server.ServerProcess(delay=0.01)
    b = delay_server.ServerProcess(delay=0.01)
    try:
        backend = LLMBackend(model="delay-model", base_url=[a.url, b.url], max_concurrency=16,
                             cache_path=tmp_path / "cache.sqlite", api_key_env="NO_KEY_NEEDED")
        delay_server.hold_after(a.url, answered_by_a)  # a answers 20, then keeps the rest waiting
        result = {}
        run = threading.Thread(target=lambda: result.update(outcomes=run_requests(backend, _requests(n))))
        run.start()
        # half-way: a has answered its 20 and holds a request
        delay_server.wait_for_requests(a.url, answered_by_a + 1, answered=answered_by_a)
        assert delay_server.server_stats(a.url)["answered"] == answered_by_a
        a.stop(kill=True)  # its held requests are cut off; its port now refuses
        run.join(timeout=120)
        assert not run.is_alive()
        outcomes = result["outcomes"]
        assert all(outcome.ok for outcome in outcomes), [o.error for o in outcomes if not o.ok][:3]
        # no request answered twice: b answered exactly the ones a did not
        assert delay_server.server_stats(b.url)["answered"] == n - answered_by_a
        # the answers are keyed by the model and request alone: b by itself, or the pair, reads them all
        again = run_requests(LLMBackend(model="delay-model", base_url=[b.url], cache_path=tmp_path / "cache.sqlite",
                                        api_key_env="NO_KEY_NEEDED"), _requests(n))
        assert all(outcome.cached for outcome in again)
        assert delay_server.server_stats(b.url)["answered"] == n - answered_by_a
    finally:
        a.stop(kill=True)
        b.stop()


def test_two_replicas_with_16_slots_each_are_both_kept_full(tmp_path):
    # llama.cpp serves --parallel 16 slots: at concurrency 32, least-outstanding keeps 16 on each
    servers = [delay_server.ServerProcess(delay=0.02, slots=16) for _ in range(2)]
    try:
        backend = LLMBackend(model="delay-model", base_url=[s.url for s in servers], max_concurrency=32,
                             cache_path=False, api_key_env="NO_KEY_NEEDED")
        annotator = MLLMAnnotator(backend, classes=LABELS, instructions="Classify the sentiment.")
        X = np.array([f"customer review {i}" for i in range(400)], dtype=object)
        labels = annotator.fit(X).predict(X)
        assert set(labels) <= set(LABELS) and annotator.usage_.failures == 0
        stats = [delay_server.server_stats(s.url) for s in servers]
        assert sum(s["answered"] for s in stats) == len(X)
        assert [s["peak_in_flight"] for s in stats] == [16, 16]
        assert all(s["answered"] >= 0.4 * len(X) for s in stats), stats
    finally:
        for server in servers:
            server.stop()


def test_command_takes_base_url_more_than_once(tmp_path):
    servers = [delay_server.ServerProcess(delay=0.0) for _ in range(2)]
    try:
        items = tmp_path / "items.csv"
        items.write_text("text\n" + "".join(f"review {i} was fine\n" for i in range(30)))
        env = {"NO_KEY_NEEDED": "x", "PATH": "", "PYTHONPATH": ":".join(sys.path)}
        done = subprocess.run(
            [sys.executable, "-m", "act_sklearn", "annotate", "--run", str(tmp_path / "run"), "--input", str(items),
             "--text-column", "text", "--classes", ",".join(LABELS), "--model", "delay-model",
             "--api-key-env", "NO_KEY_NEEDED", "--base-url", servers[0].url, "--base-url", servers[1].url],
            env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        answered = [delay_server.server_stats(s.url)["answered"] for s in servers]
        assert sum(answered) == 30 and min(answered) > 0
        assert len((tmp_path / "run" / "machine.csv").read_text().splitlines()) == 31
    finally:
        for server in servers:
            server.stop()
