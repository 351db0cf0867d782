"""The README's Python examples run as written, in order, in one namespace."""

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_python_examples_run(capsys, monkeypatch, tmp_path, llama_server_url):
    # the LLM example runs against the test suite's real llama.cpp server, caching in tmp
    monkeypatch.setenv("ACT_BASE_URL", llama_server_url)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 2
    namespace = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    output = capsys.readouterr().out
    assert "human labels" in output and "90% CI" in output
    assert namespace["act"].n_human_labels_ == namespace["sampler"].budget_
    assert namespace["act_net"].score(namespace["X_pool"].astype("float32"), namespace["y_pool"]) > 0.8
    assert set(namespace["labels"]) <= {"positive", "negative", "neutral"}
    assert namespace["error_proba"].shape == (3,) and "UsageLedger(requests=" in output
    assert namespace["post_error_proba"].shape == (200,) and "zero-shot accuracy" in output
