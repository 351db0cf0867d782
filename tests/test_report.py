"""The report (figures, cost, plots), the oracle review and the whole simulation with resume."""

import json

import numpy as np
import pytest
from fake_llm import FakeLLM

from act_sklearn import MLLMAnnotator, MLLMCriticizer
from act_sklearn.workflow.report import AQG_BUDGETS, report
from act_sklearn.workflow.run_folder import RunFolder, RunFolderError
from act_sklearn.workflow.simulation import simulate
from act_sklearn.stats import criticizer_auroc, estimate_label_accuracy
from act_sklearn.workflow.steps import import_reviews, review_with_oracle, select

CLASSES = ["cat", "dog", "bird"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _run(tmp_path, *, gold=True, n_items=60):
    rng = np.random.default_rng(1)
    truth = [CLASSES[i % 3] for i in range(n_items)]
    items = [
        dict(item_id=f"i{i}", text=f"item {i}: a {truth[i]}", image=None, gold=truth[i] if gold else None)
        for i in range(n_items)
    ]
    run = RunFolder.create(tmp_path / "run", items, classes=CLASSES, settings={})
    wrong = rng.random(n_items) < 0.3
    machine = [CLASSES[(i + 1) % 3] if wrong[i] else truth[i] for i in range(n_items)]
    error_proba = np.clip(np.where(wrong, 0.7, 0.2) + rng.normal(0, 0.15, n_items), 0, 1)
    run.write_table("machine.csv", {"item_id": run.item_ids(), "machine_label": machine})
    run.finish_step("annotate")
    run.write_table("criticism.csv", {"item_id": run.item_ids(), "error_proba": [repr(float(e)) for e in error_proba]})
    run.finish_step("criticize")
    return run, truth, np.array(machine, dtype=object), error_proba


def test_report_of_a_simulation_has_the_truth_and_both_plots(tmp_path):
    run, truth, machine, error_proba = _run(tmp_path)
    select(run, budget=15, explore=0.2, random_state=0)
    outcome = review_with_oracle(run)
    assert len(outcome.taken) == 15 and run.reviews() == {i: truth[int(i[1:])] for i in run.selected_ids()}
    facts = report(run)
    saved = json.loads((run.path / "report.json").read_text())
    assert saved == json.loads(json.dumps(facts))
    assert facts["machine_accuracy"] == pytest.approx(np.mean(machine == np.array(truth, dtype=object)))
    assert facts["criticizer_auroc"] == pytest.approx(criticizer_auroc(truth, machine, error_proba))
    final = [run.reviews().get(i, m) for i, m in zip(run.item_ids(), machine)]
    assert facts["final_label_accuracy_true"] == pytest.approx(np.mean(np.array(final) == np.array(truth)))
    assert facts["human_labels"] == 15 and facts["pending_reviews"] == 0
    assert facts["errors_found"] == sum(truth[int(i[1:])] != machine[int(i[1:])] for i in run.selected_ids())
    curves = facts["aqg_curves"]
    assert len(curves) == 2 and all(curve["budget"] == list(AQG_BUDGETS) for curve in curves.values())
    assert all(len(curve["aqg"]) == len(AQG_BUDGETS) for curve in curves.values())
    for name in ("aqg.png", "calibration.png"):
        assert (run.path / name).read_bytes()[:8] == PNG_SIGNATURE
    markdown = (run.path / "report.md").read_text()
    assert "final-label accuracy" in markdown and "![aqg.png](aqg.png)" in markdown


def test_report_in_production_estimates_and_calibrates_on_reviews_only(tmp_path):
    run, truth, machine, error_proba = _run(tmp_path, gold=False)
    select(run, budget=20, explore=0.3, random_state=0)
    chosen = run.selected_ids()
    answered = {item: truth[int(item[1:])] for item in chosen[:12]}  # a partial review
    sheet = tmp_path / "answers.csv"
    sheet.write_text("item_id,label\n" + "".join(f"{k},{v}\n" for k, v in answered.items()))
    import_reviews(run, sheet)
    facts = report(run, confidence=0.8)
    assert "machine_accuracy" not in facts and not (run.path / "aqg.png").exists()
    assert facts["plots"] == ["calibration.png"] and facts["pending_reviews"] == 8
    ids = run.item_ids()
    reviewed = np.array([i in answered for i in ids])
    human = np.array([answered.get(i, m) for i, m in zip(ids, machine)], dtype=object)
    pi = np.asarray(run.read_table("selection.csv")["inclusion_proba"], dtype=float)
    expected = estimate_label_accuracy(machine, human, reviewed, pi, confidence=0.8)
    assert facts["final_label_accuracy"] == pytest.approx(expected.accuracy)
    assert facts["final_label_accuracy_ci"] == pytest.approx([expected.ci_low, expected.ci_high])
    assert 0 <= facts["criticizer_ece_reviewed"] <= 1


def test_oracle_review_needs_gold_labels(tmp_path):
    run, *_ = _run(tmp_path, gold=False)
    select(run, budget=5)
    with pytest.raises(RunFolderError, match="--label-column"):
        review_with_oracle(run)


def test_answers_fix_the_selection_they_were_drawn_under(tmp_path):
    run, *_ = _run(tmp_path)
    select(run, budget=10, random_state=0)
    review_with_oracle(run)
    selection = (run.path / "selection.csv").read_bytes()
    select(run, budget=10, random_state=0)  # the same selection again is harmless
    with pytest.raises(RunFolderError, match="new --run folder"):
        select(run, budget=20, random_state=0)
    # the same settings on new error probabilities would change the inclusion probabilities
    criticism = run.read_table("criticism.csv")
    run.write_table("criticism.csv", {**criticism, "error_proba": criticism["error_proba"][::-1]})
    with pytest.raises(RunFolderError, match="another selection"):
        select(run, budget=10, random_state=0)
    assert (run.path / "selection.csv").read_bytes() == selection


def test_simulation_costs_and_resumes_without_repeating_requests(tmp_path):
    items = [dict(item_id=f"t{i}", text=f"item {i}: a {CLASSES[i % 3]}", image=None, gold=CLASSES[i % 3])
             for i in range(30)]
    run = RunFolder.create(tmp_path / "run", items, classes=CLASSES, settings={})
    fake = FakeLLM()
    backend = fake.backend(tmp_path, prices={"input": 2.0, "output": 8.0})
    components = MLLMAnnotator(backend, classes=CLASSES), MLLMCriticizer(backend, strategy="naive")
    lines = []
    simulate(run, *components, budget=6, explore=0.5, log=lines.append)
    n_requests = len(fake.requests)
    assert n_requests == 60 and (run.path / "model.joblib").exists()
    facts = report(run)
    # FakeLLM reports 10 prompt and 5 completion tokens per request
    assert facts["llm_usage"]["annotate"]["cost_usd"] == pytest.approx(30 * (10 * 2.0 + 5 * 8.0) / 1e6)
    assert facts["llm_cost_usd"] == pytest.approx(60 * (10 * 2.0 + 5 * 8.0) / 1e6)
    assert facts["models"] == {"annotate": "MLLMAnnotator(fake-model)", "criticize": "MLLMCriticizer(fake-model)"}

    lines.clear()
    simulate(run, *components, budget=6, explore=0.5, log=lines.append)
    assert len(fake.requests) == n_requests  # nothing asked twice
    assert lines[0].startswith("annotate: done earlier") and lines[1].startswith("criticize: done earlier")
    assert "answered 0 pending items" in lines[3]
