"""The README's Python examples run as written, in order, in one namespace.

The LLM examples run against loopback servers: the test suite's llama.cpp
server, the Batch API server of ``batch_server.py`` and two replicas of
``benchmarks/delay_server.py``. One thing is changed: the batch poll interval,
60 s in the README, is 0.01 s here.
"""

import contextlib
import re
import sys
from pathlib import Path

from batch_server import BatchServer
from conftest import require_extra

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import delay_server  # noqa: E402

README = Path(__file__).resolve().parent.parent / "README.md"
POLL = "batch_poll_interval=60"


def test_readme_python_examples_run(capsys, monkeypatch, tmp_path, llama_server_url):
    require_extra("dask.distributed", "dask")  # the model-selection example runs on a local Dask cluster
    # the LLM example runs against the test suite's real llama.cpp server, caching in tmp
    monkeypatch.setenv("ACT_BASE_URL", llama_server_url)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 2 and sum(POLL in block for block in blocks) == 1
    namespace = {}
    with contextlib.ExitStack() as servers:
        batch_api = servers.enter_context(BatchServer())
        replicas = [delay_server.ServerProcess(delay=0.0) for _ in range(2)]
        for replica in replicas:
            servers.callback(replica.stop)
        monkeypatch.setenv("ACT_BATCH_URL", batch_api.url)
        monkeypatch.setenv("ACT_REPLICAS", ",".join(replica.url for replica in replicas))
        for block in blocks:
            exec(compile(block.replace(POLL, "batch_poll_interval=0.01"), str(README), "exec"), namespace)
        # large jobs: every ticket labelled through one batch and no online request; both replicas served
        tickets = namespace["tickets"]
        assert set(namespace["batch_labels"]) <= {"complaint", "praise"} and len(namespace["batch_labels"]) == 60
        assert batch_api.batches_created == 1 and batch_api.chat_requests == 0
        assert sum(batch_api.lines_answered.values()) == len(tickets)
        answered = [delay_server.server_stats(replica.url)["answered"] for replica in replicas]
        assert sum(answered) == len(tickets) and min(answered) > 0
        assert set(namespace["replica_labels"]) <= {"complaint", "praise"}
    output = capsys.readouterr().out
    assert "human labels" in output and "90% CI" in output
    assert namespace["act"].n_human_labels_ == namespace["sampler"].budget_
    assert namespace["act_net"].score(namespace["X_pool"].astype("float32"), namespace["y_pool"]) > 0.8
    assert set(namespace["labels"]) <= {"positive", "negative", "neutral"}
    assert namespace["error_proba"].shape == (3,) and "UsageLedger(requests=" in output
    assert namespace["post_error_proba"].shape == (200,) and "zero-shot accuracy" in output
    assert namespace["cluster_search"].best_params_["sampler__budget"] in (0.1, 0.2)
