"""Batch mode against a loopback Batch API: every item ends labelled or failed, and nothing is paid twice.

What a client paid for is counted on the server's side (files, batches, and how
often each ``custom_id`` was answered), never taken from the client's ledger.
"""

import csv
import pickle
import shutil
import subprocess
import sys
import threading

import pytest
from batch_server import BatchServer, Script
from fake_llm import answer_by_keyword, completion, user_text
from sklearn.base import clone

from act_sklearn import LLMBackend, MLLMAnnotator
from act_sklearn.llm import ResponseCache, UsageLedger, batch, recorded_batches, request_key, run_requests
from act_sklearn.workflow.cli import EXIT_LLM_FAILED, EXIT_OK, main
from act_sklearn.workflow.run_folder import RunFolder

LABELS = ["cat", "dog", "bird"]
ITEMS = [f"item {i}: a {LABELS[i % 3]}" for i in range(9)]
WAIT = 120  # seconds an event may take before a test fails (never a sleep)


@pytest.fixture
def server():
    with BatchServer() as running:
        yield running


def _backend(server, tmp_path, **settings):
    return LLMBackend(model="m", base_url=server.url, api_key_env="NO_KEY_NEEDED", mode="batch",
                      batch_poll_interval=0.001, cache_path=tmp_path / "cache.sqlite", **settings)


def _annotator(backend, **settings):
    return MLLMAnnotator(backend, classes=LABELS, output_mode="json_schema", on_error="skip", **settings).fit()


def _labels(annotations):
    return [None if index < 0 else LABELS[index] for index in annotations.label_index]


def _paid_once(server):
    """Every line the server answered, it answered once."""
    return max(server.lines_answered.values()) == 1


def test_lines_are_split_within_the_file_limits():
    lines = [(str(i), batch.batch_line(str(i), {"model": "m", "messages": [{"role": "user", "content": "x" * i}]}))
             for i in range(10)]
    files = batch.split_lines(lines, max_requests=4)
    assert [keys for keys, _ in files] == [["0", "1", "2", "3"], ["4", "5", "6", "7"], ["8", "9"]]
    sizes = [len(line) for _, line in lines]
    files = batch.split_lines(lines, max_bytes=sizes[8] + sizes[9])
    assert all(len(content) <= sizes[8] + sizes[9] for _, content in files)
    assert [key for keys, _ in files for key in keys] == [str(i) for i in range(10)]
    assert b"".join(content for _, content in files) == b"".join(line for _, line in lines)
    with pytest.raises(ValueError, match="more than a batch file may"):
        batch.split_lines(lines, max_bytes=10)


def test_every_status_then_answers_in_the_cache_that_serve_an_online_run(server, tmp_path):
    server.script(Script(statuses=("validating", "in_progress", "in_progress", "finalizing", "completed")))
    backend = _backend(server, tmp_path)
    annotator = _annotator(backend)
    annotations = annotator.annotate(ITEMS)
    assert _labels(annotations) == [LABELS[i % 3] for i in range(9)] and not annotations.failures
    assert (server.files_created, server.batches_created) == (1, 1) and len(server.lines_answered) == 9
    assert server.retrieves == 5 and _paid_once(server)
    line = server.uploaded_lines()[0]
    assert line["method"] == "POST" and line["url"] == "/v1/chat/completions"
    assert line["custom_id"] == request_key(server.url, line["body"]) and line["body"]["model"] == "m"
    usage = annotator.usage_
    assert usage.requests == 0 and usage.batch_requests == 9
    assert (usage.batch_prompt_tokens, usage.batch_completion_tokens) == (90, 45)
    (record,) = ResponseCache(tmp_path / "cache.sqlite").batch_records()
    assert record["status"] == "completed" and record["ingested"] and len(record["custom_ids"]) == 9

    # the same items online: every answer from the cache, nothing sent
    online = _annotator(backend.set_params(mode="online"))
    assert _labels(online.annotate(ITEMS)) == _labels(annotations)
    assert server.chat_requests == 0 and online.usage_.cache_hits == 9 and online.usage_.requests == 0
    # and in batch mode again: nothing submitted
    assert _labels(_annotator(backend.set_params(mode="batch")).annotate(ITEMS)) == _labels(annotations)
    assert server.batches_created == 1


def test_failed_lines_become_the_items_failures_and_a_rerun_sends_only_them(server, tmp_path):
    broken = {"item 2: a bird", "item 7: a dog"}
    server.script(Script(fail_line=lambda body: "this request is broken" if user_text(body) in broken else None))
    backend = _backend(server, tmp_path)
    annotations = _annotator(backend).annotate(ITEMS)
    assert [f.index for f in annotations.failures] == [2, 7]
    assert all("HTTP 400: this request is broken" in f.reason for f in annotations.failures)
    assert _labels(annotations)[:2] == ["cat", "dog"]
    again = _annotator(backend).annotate(ITEMS)
    assert not again.failures and server.batches_created == 2
    assert sorted(user_text(line["body"]) for line in server.uploaded_lines()[9:]) == sorted(broken)


def test_lines_that_failed_with_429_or_5xx_go_in_the_next_batch_within_max_retries(server, tmp_path):
    busy = {"item 1: a dog": (429, "rate limited"), "item 5: a bird": (503, "overloaded")}
    server.script(Script(fail_line=lambda body: busy.get(user_text(body))),
                  Script(fail_line=lambda body: (429, "still rate limited") if user_text(body) == "item 1: a dog"
                         else None))
    annotations = _annotator(_backend(server, tmp_path)).annotate(ITEMS)
    assert not annotations.failures and _labels(annotations) == [LABELS[i % 3] for i in range(9)]
    # the first batch's two failed lines in a second, then the one still refused in a third: nothing else
    assert server.batches_created == 3
    assert sorted(user_text(line["body"]) for line in server.uploaded_lines()[9:]) == sorted(
        ["item 1: a dog", "item 5: a bird", "item 1: a dog"])
    # with max_retries=1 the line refused twice is the item's failure, naming the last reason
    server.script(*[Script(fail_line=lambda body: (500, "broken backend"))] * 2)
    failed = _annotator(_backend(server, tmp_path, max_retries=1)).annotate(["item 9: a cat"])
    assert [f.index for f in failed.failures] == [0] and "failed 2 times, last: HTTP 500" in failed.failures[0].reason
    assert server.batches_created == 5


def test_an_expired_batch_keeps_its_finished_lines_and_resubmits_the_rest(server, tmp_path):
    server.script(Script(statuses=("in_progress", "expired"), answered=4))
    annotations = _annotator(_backend(server, tmp_path)).annotate(ITEMS)
    assert not annotations.failures and _labels(annotations) == [LABELS[i % 3] for i in range(9)]
    assert server.batches_created == 2 and _paid_once(server) and len(server.lines_answered) == 9
    first, second = ResponseCache(tmp_path / "cache.sqlite").batch_records()
    assert first["status"] == "expired" and len(second["custom_ids"]) == 5
    assert set(first["custom_ids"][4:]) == set(second["custom_ids"])


def test_a_batch_that_expires_again_and_again_ends_in_failures(server, tmp_path):
    server.script(*[Script(statuses=("expired",), answered=0)] * batch.MAX_EXPIRIES)
    annotations = _annotator(_backend(server, tmp_path)).annotate(ITEMS[:2])
    assert [f.index for f in annotations.failures] == [0, 1] and "expired" in annotations.failures[0].reason
    assert server.batches_created == batch.MAX_EXPIRIES and not server.lines_answered


def test_a_failed_batch_fails_its_items_with_the_reason_and_a_rerun_labels_them(server, tmp_path):
    server.script(Script(statuses=("validating", "failed"),
                         errors=[{"code": "invalid_json", "message": "line 3 is not JSON", "line": 3}]))
    backend = _backend(server, tmp_path)
    annotations = _annotator(backend).annotate(ITEMS)
    assert len(annotations.failures) == 9
    assert "failed: invalid_json: line 3 is not JSON (line 3)" in annotations.failures[0].reason
    assert not _annotator(backend).annotate(ITEMS).failures
    assert server.batches_created == 2 and _paid_once(server)


def test_cancelled_while_waiting_keeps_the_finished_lines(server, tmp_path):
    server.script(Script(answered=3))
    server.hold()
    backend = _backend(server, tmp_path)
    result = {}
    worker = threading.Thread(target=lambda: result.update(annotations=_annotator(backend).annotate(ITEMS)))
    worker.start()
    assert server.polled_while_held.wait(WAIT)
    cache = ResponseCache(tmp_path / "cache.sqlite")
    (row,) = recorded_batches(backend, cache, cancel=True)
    assert row["cancelled"] and row["status"] == "cancelling" and row["n_requests"] == 9
    worker.join(WAIT)
    annotations = result["annotations"]
    assert [f.index for f in annotations.failures] == list(range(3, 9))
    assert "cancelled" in annotations.failures[0].reason and _labels(annotations)[:3] == LABELS
    (row,) = recorded_batches(backend, cache)
    assert row["status"] == "cancelled" and row["ingested"] and not row["cancelled"]
    assert recorded_batches(backend, cache, cancel=True)[0]["cancelled"] is False  # ended: left alone


@pytest.mark.filterwarnings("ignore::act_sklearn.llm.ServerWarning")  # the cut-off answers have no logprobs
def test_an_unusable_answer_climbs_the_online_ladder_one_round_each(server, tmp_path):
    server.answer = lambda body: (completion('{\n \t "lab', finish_reason="length") if body["max_tokens"] < 100
                                  else answer_by_keyword(body))
    annotator = _annotator(_backend(server, tmp_path), max_tokens=64)
    annotations = annotator.annotate(ITEMS[:3])
    assert _labels(annotations) == LABELS and annotator.usage_.unusable == 3
    assert server.batches_created == 2
    assert [line["body"]["max_tokens"] for line in server.uploaded_lines()] == [64] * 3 + [256] * 3


def test_requests_are_split_into_several_batches(server, tmp_path, monkeypatch):
    monkeypatch.setattr(batch, "MAX_REQUESTS_PER_FILE", 4)
    annotations = _annotator(_backend(server, tmp_path)).annotate(ITEMS)
    assert not annotations.failures and (server.files_created, server.batches_created) == (3, 3)
    assert _paid_once(server) and len(server.lines_answered) == 9


def test_killed_between_create_and_its_record_the_batch_is_found_not_made_again(server, tmp_path, monkeypatch):
    record_batch = ResponseCache.record_batch

    def killed(self, input_file_id, batch_id, status=None):
        raise KeyboardInterrupt  # as if the process died right after batches.create returned

    monkeypatch.setattr(ResponseCache, "record_batch", killed)
    backend = _backend(server, tmp_path)
    with pytest.raises(KeyboardInterrupt):
        _annotator(backend).annotate(ITEMS)
    assert server.batches_created == 1
    monkeypatch.setattr(ResponseCache, "record_batch", record_batch)
    annotations = _annotator(backend).annotate(ITEMS)
    assert not annotations.failures and (server.files_created, server.batches_created) == (1, 1)
    assert _paid_once(server)


def test_uploaded_but_never_created_the_recorded_file_is_used(server, tmp_path, monkeypatch):
    async def killed(self, file_id):
        raise KeyboardInterrupt  # died between the upload's record and batches.create

    create = batch._Batches.create
    monkeypatch.setattr(batch._Batches, "create", killed)
    backend = _backend(server, tmp_path)
    with pytest.raises(KeyboardInterrupt):
        _annotator(backend).annotate(ITEMS)
    monkeypatch.setattr(batch._Batches, "create", create)
    assert not _annotator(backend).annotate(ITEMS).failures
    assert (server.files_created, server.batches_created) == (1, 1) and _paid_once(server)


def test_batch_tokens_are_priced_at_the_batch_price():
    ledger = UsageLedger(prompt_tokens=1_000_000, completion_tokens=1_000_000,
                         batch_prompt_tokens=2_000_000, batch_completion_tokens=2_000_000)
    assert ledger.cost({"input": 1.0, "output": 3.0}) == pytest.approx(4.0 + 4.0)  # half price by default
    assert ledger.cost({"input": 1.0, "output": 3.0, "batch_input": 0.25, "batch_output": 1.0}) == pytest.approx(6.5)


def test_the_batch_backend_clones_pickles_and_checks_its_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("SECRET_KEY_VAR", "sk-secret")
    backend = LLMBackend(mode="batch", batch_poll_interval=5, api_key_env="SECRET_KEY_VAR", cache_path=tmp_path / "c")
    annotator = MLLMAnnotator(backend, classes=LABELS)
    assert clone(annotator).backend.mode == "batch" and clone(annotator).backend.batch_poll_interval == 5
    assert b"sk-secret" not in pickle.dumps(annotator) and "sk-secret" not in repr(annotator)
    with pytest.raises(ValueError, match="mode must be one of"):
        LLMBackend(mode="offline")
    with pytest.raises(ValueError, match="cache_path=False"):
        LLMBackend(mode="batch", cache_path=False)
    with pytest.raises(ValueError, match="batch_poll_interval"):
        LLMBackend(batch_poll_interval=0)


def test_run_requests_in_batch_mode_without_a_check(server, tmp_path):
    bodies = [{"messages": [{"role": "user", "content": text}], "max_tokens": 8} for text in ("a", "b", "a")]
    outcomes = run_requests(_backend(server, tmp_path), bodies)
    assert all(o.ok for o in outcomes) and len(server.lines_answered) == 2  # the duplicate is asked once


# ---------------------------------------------------------------------------------------------
# the command: killed while it waits, the same command resumes the same batch
# ---------------------------------------------------------------------------------------------

def _items_file(tmp_path):
    path = tmp_path / "reviews.csv"
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["id", "review"])
        for i in range(24):
            writer.writerow([f"m{i}", f"movie {i} was {'good fun' if i % 2 else 'bad and dull'}"])
    return path


def _annotate(run, items, url, *extra):
    return ["annotate", "--run", str(run), "--input", str(items), "--classes", "good,bad", "--id-column", "id",
            "--text-column", "review", "--base-url", url, "--model", "m", "--api-key-env", "NO_KEY_NEEDED", *extra]


def _command(*args):
    env = {"NO_KEY_NEEDED": "x", "PATH": "", "PYTHONPATH": ":".join(sys.path)}
    return subprocess.Popen([sys.executable, "-m", "act_sklearn", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_annotate_killed_while_polling_resumes_the_same_batch_and_pays_nothing_twice(server, tmp_path, capsys):
    items = _items_file(tmp_path)
    run = tmp_path / "run"
    command = _annotate(run, items, server.url, "--batch", "--batch-poll-interval", "0.001")
    server.hold()
    process = _command(*command)
    try:
        assert server.created.wait(WAIT) and server.polled_while_held.wait(WAIT)
    finally:
        process.kill()  # SIGKILL: no handler runs
        process.wait()
    assert (server.files_created, server.batches_created) == (1, 1) and not server.lines_answered
    assert not (run / "machine.csv").exists()
    server.release()

    assert main(command) == EXIT_OK
    assert (server.files_created, server.batches_created) == (1, 1)
    assert len(server.lines_answered) == 24 and _paid_once(server)
    labels = RunFolder(run).read_table("machine.csv")["machine_label"]
    assert labels == ["good" if i % 2 else "bad" for i in range(24)]
    usage = RunFolder(run).manifest()["steps"]["annotate"]["usage"]
    assert usage["batch_requests"] == 0 and usage["requests"] == 0  # it resumed: nothing submitted
    assert usage["batch_prompt_tokens"] == 24 * 10

    capsys.readouterr()
    assert main(["batches", "--run", str(run), "--api-key-env", "NO_KEY_NEEDED"]) == EXIT_OK
    (line,) = capsys.readouterr().out.strip().splitlines()
    assert "completed" in line and "24 done, 0 failed of 24" in line and "answers in the cache" in line

    # an online run of the same items in another folder with this cache: all hits, no request
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(run / "cache.sqlite", other / "cache.sqlite")
    assert main(_annotate(other, items, server.url)) == EXIT_OK
    usage = RunFolder(other).manifest()["steps"]["annotate"]["usage"]
    assert usage["cache_hits"] == 24 and usage["requests"] == 0 and server.chat_requests == 0
    assert RunFolder(other).read_table("machine.csv")["machine_label"] == labels


def test_batches_cancel_through_the_command_then_the_same_command_labels_the_rest(server, tmp_path, capsys):
    items = _items_file(tmp_path)
    run = tmp_path / "run"
    annotate = _annotate(run, items, server.url, "--batch", "--batch-poll-interval", "0.001")
    server.script(Script(answered=10))
    server.hold()
    process = _command(*annotate)
    assert server.polled_while_held.wait(WAIT)
    assert main(["batches", "--run", str(run), "--cancel", "--api-key-env", "NO_KEY_NEEDED"]) == EXIT_OK
    assert "cancelling" in capsys.readouterr().out
    out, err = process.communicate(timeout=WAIT)
    assert process.returncode == EXIT_LLM_FAILED and "14 of 24" in err and "cancelled" in err
    server.release()
    assert main(annotate) == EXIT_OK
    assert server.batches_created == 2 and len(server.lines_answered) == 24 and _paid_once(server)
    assert RunFolder(run).read_table("machine.csv")["machine_label"] == ["good" if i % 2 else "bad" for i in range(24)]

    # criticize --batch: its own batch, then nothing more for the same command
    criticize = ["criticize", "--run", str(run), "--strategy", "naive", "--base-url", server.url, "--model", "m",
                 "--api-key-env", "NO_KEY_NEEDED", "--batch", "--batch-poll-interval", "0.001"]
    assert main(criticize) == EXIT_OK and server.batches_created == 3
    assert RunFolder(run).error_proba().shape == (24,) and server.chat_requests == 0
    capsys.readouterr()
    assert main(["batches", "--run", str(run), "--api-key-env", "NO_KEY_NEEDED"]) == EXIT_OK
    statuses = [line.split()[1] for line in capsys.readouterr().out.strip().splitlines()]
    assert statuses == ["cancelled", "completed", "completed"]


def test_run_with_batch_labels_criticizes_and_trains_through_the_batch_api_only(server, tmp_path):
    # the whole job through the command: both LLM steps as batches, no online chat request
    items = tmp_path / "reviews.csv"
    with open(items, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["id", "review", "gold"])
        for i in range(24):
            writer.writerow([f"m{i}", f"movie {i} was {'good fun' if i % 2 else 'bad and dull'}", "good" if i % 2 else "bad"])
    run = tmp_path / "run"
    command = ["run", "--run", str(run), "--input", str(items), "--classes", "good,bad", "--id-column", "id",
               "--text-column", "review", "--label-column", "gold", "--budget", "6", "--strategy", "naive",
               "--base-url", server.url, "--model", "m", "--api-key-env", "NO_KEY_NEEDED",
               "--batch", "--batch-poll-interval", "0.001"]
    assert main(command) == EXIT_OK
    assert server.batches_created == 2 and server.chat_requests == 0 and _paid_once(server)
    folder = RunFolder(run)
    assert folder.read_table("machine.csv")["machine_label"] == ["good" if i % 2 else "bad" for i in range(24)]
    assert folder.error_proba().shape == (24,) and len(folder.reviews()) == 6
    steps = folder.manifest()["steps"]
    assert steps["annotate"]["usage"]["batch_requests"] == 24 and steps["criticize"]["usage"]["batch_requests"] == 24
    report = (run / "report.md").read_text()  # the run trained and reported
    assert "annotate: Batch API requests / tokens in / tokens out | 24 /" in report
    # the same command again: every step done, no batch and no request
    assert main(command) == EXIT_OK
    assert server.batches_created == 2 and server.chat_requests == 0
