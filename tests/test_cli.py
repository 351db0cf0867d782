"""The act-sklearn command, end to end against the real llama.cpp server, and its exit codes."""

import csv
import json

import pytest

from act_sklearn.cli import EXIT_BAD_INPUT, EXIT_CONFLICTS, EXIT_OK, main
from act_sklearn.run_folder import RunFolder

CLASSES = ["good", "bad"]


@pytest.fixture
def items_file(tmp_path):
    path = tmp_path / "reviews.csv"
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["id", "review", "gold"])
        for i in range(24):
            writer.writerow([f"m{i}", f"movie {i} was {'great fun' if i % 2 else 'a dull mess'}", CLASSES[i % 2 == 0]])
    return path


def _label_studio_export(tasks, labels):
    """What Label Studio's JSON export holds after reviewers answered ``labels`` (item id -> label)."""
    exported = []
    for number, task in enumerate(tasks, start=1):
        label = labels.get(task["data"]["item_id"])
        annotations = [] if label is None else [
            dict(
                completed_by=1,
                was_cancelled=False,
                result=[dict(from_name="label", to_name="text", type="choices", value={"choices": [label]})],
            )
        ]
        exported.append(dict(id=number, data=task["data"], annotations=annotations))
    return exported


def test_annotate_select_export_import_train_against_llama_server(
    llama_server_url, items_file, tmp_path, capsys
):
    run = tmp_path / "run"
    llm = ["--base-url", llama_server_url, "--model", "tiny", "--max-concurrency", "4"]
    assert main(["annotate", "--run", str(run), "--input", str(items_file), "--classes", ",".join(CLASSES),
                 "--id-column", "id", "--text-column", "review", "--label-column", "gold", *llm]) == EXIT_OK
    machine = RunFolder(run).read_table("machine.csv")
    assert len(machine["machine_label"]) == 24 and set(machine["machine_label"]) <= set(CLASSES)
    assert main(["criticize", "--run", str(run), "--strategy", "naive", *llm]) == EXIT_OK
    error_proba = [float(e) for e in RunFolder(run).read_table("criticism.csv")["error_proba"]]
    assert all(0 <= e <= 1 for e in error_proba)
    assert main(["select", "--run", str(run), "--budget", "8", "--explore", "0.25"]) == EXIT_OK

    tasks_path = tmp_path / "tasks.json"
    assert main(["export", "--run", str(run), "--output", str(tasks_path), "--format", "label-studio"]) == EXIT_OK
    tasks = json.loads(tasks_path.read_text())
    assert len(tasks) == 8 and all(f'value="{c}"' in (tmp_path / "tasks.config.xml").read_text() for c in CLASSES)
    assert all(task["predictions"][0]["result"][0]["value"]["choices"][0] in CLASSES for task in tasks)
    gold = {row["id"]: row["gold"] for row in csv.DictReader(open(items_file))}

    # a partial review (3 answers), then the complete one
    partial = tmp_path / "partial.json"
    first_three = {t["data"]["item_id"]: gold[t["data"]["item_id"]] for t in tasks[:3]}
    partial.write_text(json.dumps(_label_studio_export(tasks, first_three)))
    assert main(["import", "--run", str(run), str(partial)]) == EXIT_OK
    assert len(RunFolder(run).reviews()) == 3
    complete = tmp_path / "complete.json"
    complete.write_text(json.dumps(_label_studio_export(tasks, {t["data"]["item_id"]: gold[t["data"]["item_id"]] for t in tasks})))
    assert main(["import", "--run", str(run), str(complete)]) == EXIT_OK
    assert RunFolder(run).reviews() == {t["data"]["item_id"]: gold[t["data"]["item_id"]] for t in tasks}

    assert main(["train", "--run", str(run)]) == EXIT_OK
    assert (run / "model.joblib").exists()
    output = capsys.readouterr().out
    assert "trained on 8 human labels" in output and "final-label accuracy" in output
    assert set(RunFolder(run).manifest()["steps"]) == {"annotate", "criticize", "select", "import", "train"}
    assert main(["report", "--run", str(run)]) == EXIT_OK
    facts = json.loads((run / "report.json").read_text())
    assert facts["human_labels"] == 8 and facts["pending_reviews"] == 0 and facts["n_items"] == 24
    assert 0 <= facts["final_label_accuracy"] <= 1 and 0 <= facts["machine_accuracy"] <= 1
    assert facts["llm_usage"]["annotate"]["requests"] + facts["llm_usage"]["annotate"]["cache_hits"] == 24
    assert "final-label accuracy" in (run / "report.md").read_text()
    _check_every_file(run, n_items=24, n_reviewed=8)

    # a conflicting answer is reported (exit 4) and not taken
    conflict = tmp_path / "conflict.csv"
    item = tasks[0]["data"]["item_id"]
    other = next(c for c in CLASSES if c != gold[item])
    conflict.write_text(f"item_id,label\n{item},{other}\n")
    assert main(["import", "--run", str(run), str(conflict)]) == EXIT_CONFLICTS
    assert RunFolder(run).reviews()[item] == gold[item]


def _check_every_file(run, *, n_items, n_reviewed):
    """Each file of a finished simulation holds what it should, and nothing else is there."""
    expected = {"manifest.json", "items.jsonl", "oracle.csv", "machine.csv", "criticism.csv", "selection.csv",
                "reviews.csv", "model.joblib", "report.json", "report.md", "aqg.png", "calibration.png"}
    names = {p.name for p in run.iterdir()}
    assert expected <= names and names - expected <= {"cache.sqlite", "oracle_review.csv"}
    folder = RunFolder(run)
    ids = folder.item_ids()
    assert len(ids) == n_items == len(folder.read_table("oracle.csv")["gold"])
    for table in ("machine.csv", "criticism.csv", "selection.csv"):
        assert folder.read_table(table)["item_id"] == ids
    assert sum(map(int, folder.read_table("selection.csv")["selected"])) == n_reviewed == len(folder.reviews())
    assert set(folder.reviews().values()) <= set(folder.classes())
    for image in ("aqg.png", "calibration.png"):
        assert (run / image).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import joblib

    model = joblib.load(run / "model.joblib")
    assert model.n_human_labels_ == n_reviewed and set(model.classes_) <= set(folder.classes())
    facts = json.loads((run / "report.json").read_text())
    assert facts["n_items"] == n_items and facts["human_labels"] == n_reviewed and facts["pending_reviews"] == 0
    assert facts["plots"] == ["aqg.png", "calibration.png"]


def test_bad_input_exits_2_with_the_file_and_the_fix(items_file, tmp_path, capsys):
    code = main(["annotate", "--run", str(tmp_path / "run"), "--input", str(items_file), "--classes", "good,bad",
                 "--text-column", "text"])
    assert code == EXIT_BAD_INPUT
    error = capsys.readouterr().err
    assert str(items_file) in error and "no column 'text'" in error and "--text-column" in error
    assert not (tmp_path / "run").exists()
    assert main(["select", "--run", str(tmp_path / "nowhere"), "--budget", "3"]) == EXIT_BAD_INPUT
    assert "is not a run folder" in capsys.readouterr().err


def test_every_step_has_help(capsys):
    for step in ("annotate", "criticize", "select", "export", "import", "train", "report", "run", "demo"):
        with pytest.raises(SystemExit) as exited:
            main([step, "--help"])
        assert exited.value.code == 0
        assert "--run" in capsys.readouterr().out


def _kill_when(process, done, timeout=60):
    import time

    deadline = time.monotonic() + timeout
    while not done():
        assert process.poll() is None, "the step finished before it could be killed; slow the server down"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process.kill()
    process.wait()


def test_a_run_killed_during_steps_resumes_with_nothing_lost_and_no_repeated_request(items_file, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from delay_server import request_count, reset_count, serve_in_thread

    run = tmp_path / "run"
    with serve_in_thread(delay=0.3) as url:
        llm = ["--base-url", url, "--model", "m", "--max-concurrency", "2", "--api-key-env", "NO_KEY_NEEDED"]
        annotate = ["annotate", "--run", str(run), "--input", str(items_file), "--classes", "good,bad",
                    "--id-column", "id", "--text-column", "review", *llm]
        criticize = ["criticize", "--run", str(run), "--strategy", "naive", *llm]
        env = {"NO_KEY_NEEDED": "x", "PATH": "", "PYTHONPATH": ":".join(sys.path)}

        # killed half-way through annotate: the answers that arrived are in the cache
        process = subprocess.Popen([sys.executable, "-m", "act_sklearn.cli", *annotate], env=env)
        _kill_when(process, lambda: request_count(url) >= 8)
        assert not (run / "machine.csv").exists() and (run / "manifest.json").exists()
        sent_before = request_count(url)
        reset_count(url)
        assert main(annotate) == EXIT_OK
        usage = RunFolder(run).manifest()["steps"]["annotate"]["usage"]
        assert usage["cache_hits"] >= 1 and usage["requests"] + usage["cache_hits"] == 24
        assert request_count(url) == usage["requests"] == 24 - usage["cache_hits"]
        assert sent_before + request_count(url) <= 24 + 2  # at most the in-flight pair repeated
        machine = (run / "machine.csv").read_bytes()

        # killed during criticize: the machine labels stay, finished criticisms are not paid again
        reset_count(url)
        process = subprocess.Popen([sys.executable, "-m", "act_sklearn.cli", *criticize], env=env)
        _kill_when(process, lambda: request_count(url) >= 8)
        assert (run / "machine.csv").read_bytes() == machine and not (run / "criticism.csv").exists()
        reset_count(url)
        assert main(criticize) == EXIT_OK
        usage = RunFolder(run).manifest()["steps"]["criticize"]["usage"]
        assert usage["cache_hits"] >= 1 and request_count(url) == 24 - usage["cache_hits"]
        assert (run / "machine.csv").read_bytes() == machine


def test_run_killed_between_steps_resumes_without_repeating_a_request(items_file, tmp_path, capsys):
    import subprocess
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from delay_server import request_count, reset_count, serve_in_thread

    run = tmp_path / "run"
    with serve_in_thread(delay=0.3) as url:
        command = ["run", "--run", str(run), "--input", str(items_file), "--classes", "good,bad", "--id-column",
                   "id", "--text-column", "review", "--label-column", "gold", "--budget", "6", "--explore", "0.5",
                   "--strategy", "naive", "--base-url", url, "--model", "m", "--max-concurrency", "2",
                   "--api-key-env", "NO_KEY_NEEDED"]
        env = {"NO_KEY_NEEDED": "x", "PATH": "", "PYTHONPATH": ":".join(sys.path)}
        # killed once annotate is done and criticize is under way
        process = subprocess.Popen([sys.executable, "-m", "act_sklearn", *command], env=env)
        _kill_when(process, lambda: request_count(url) >= 24 + 6)
        assert (run / "machine.csv").exists() and not (run / "criticism.csv").exists()
        sent_before = request_count(url)
        machine = (run / "machine.csv").read_bytes()
        reset_count(url)
        assert main(command) == EXIT_OK
        output = capsys.readouterr().out
        assert "annotate: done earlier" in output and "final-label accuracy" in output
        usage = RunFolder(run).manifest()["steps"]["criticize"]["usage"]
        assert request_count(url) == usage["requests"] == 24 - usage["cache_hits"]  # no annotate request again
        assert sent_before - 24 + request_count(url) <= 24 + 2  # at most the in-flight pair repeated
        assert (run / "machine.csv").read_bytes() == machine
        _check_every_file(run, n_items=24, n_reviewed=6)

        # the whole run again: nothing sent, nothing changed
        reset_count(url)
        assert main(command) == EXIT_OK and request_count(url) == 0


def test_run_needs_the_gold_column(items_file, tmp_path, capsys):
    code = main(["run", "--run", str(tmp_path / "run"), "--input", str(items_file), "--classes", "good,bad",
                 "--text-column", "review", "--budget", "3"])
    assert code == EXIT_BAD_INPUT and "--label-column" in capsys.readouterr().err


def test_offline_demo_end_to_end_and_resumed(tmp_path, capsys):
    run = tmp_path / "demo"
    assert main(["demo", "--run", str(run), "--n-items", "240", "--budget", "0.25"]) == EXIT_OK
    output = capsys.readouterr().out
    assert "ZeroShotAnnotator(wordllama)" in output and "ZeroShotCriticizer(minilm)" in output
    assert "final-label accuracy" in output and "test accuracy of the downstream model" in output
    _check_every_file(run, n_items=240, n_reviewed=60)
    facts = json.loads((run / "report.json").read_text())
    assert facts["machine_accuracy"] > 0.5 and facts["criticizer_auroc"] > 0.75  # 0.71 and 0.93 on all posts
    assert facts["final_label_accuracy_true"] > facts["machine_accuracy"]
    downstream = facts["downstream_test_accuracy"]
    assert list(downstream) == ["machine labels only", "ACT (60 human labels)", "all gold labels"]
    assert all(0.3 < accuracy <= 1 for accuracy in downstream.values())
    selection = (run / "selection.csv").read_bytes()
    assert main(["report", "--run", str(run)]) == EXIT_OK  # a later report keeps the comparison
    assert json.loads((run / "report.json").read_text())["downstream_test_accuracy"] == downstream

    assert main(["demo", "--run", str(run), "--n-items", "240", "--budget", "0.25"]) == EXIT_OK
    output = capsys.readouterr().out
    assert "annotate: done earlier" in output and "criticize: done earlier" in output
    assert (run / "selection.csv").read_bytes() == selection


def test_demo_against_an_openai_compatible_server(llama_server_url, tmp_path, capsys):
    run = tmp_path / "demo"
    code = main(["demo", "--run", str(run), "--n-items", "16", "--budget", "4", "--explore", "0.5",
                 "--base-url", llama_server_url, "--model", "tiny", "--strategy", "naive", "--max-concurrency", "4"])
    assert code == EXIT_OK
    output = capsys.readouterr().out
    assert "MLLMAnnotator(tiny)" in output and "MLLMCriticizer(tiny)" in output
    facts = json.loads((run / "report.json").read_text())
    assert facts["llm_usage"]["annotate"]["requests"] + facts["llm_usage"]["annotate"]["cache_hits"] == 16
    assert facts["human_labels"] == 4 and (run / "cache.sqlite").exists()
