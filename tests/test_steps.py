"""Select, export, import on a run folder: partial and complete reviews, nothing lost, bad files refused."""

import csv
import json

import numpy as np
import pytest

from act_sklearn.review import ReviewFileError
from act_sklearn.workflow.run_folder import RunFolder, RunFolderError
from act_sklearn.workflow.steps import export, import_reviews, review_rows, select, select_next_round, train

CLASSES = ["pos", "neg"]


@pytest.fixture
def run(tmp_path):
    rng = np.random.default_rng(0)
    items = [dict(item_id=f"r{i}", text=f"review {i}", image=None, gold=CLASSES[i % 2]) for i in range(40)]
    run = RunFolder.create(tmp_path / "run", items, classes=CLASSES, settings={})
    ids = run.item_ids()
    run.write_table("machine.csv", {"item_id": ids, "machine_label": [CLASSES[i % 3 == 0] for i in range(40)]})
    run.finish_step("annotate")
    run.write_table("criticism.csv", {"item_id": ids, "error_proba": list(rng.random(40).round(3))})
    run.finish_step("criticize")
    return run


def _files(run):
    return {p.name: p.read_bytes() for p in run.path.iterdir()}


def test_train_needs_answers(run):
    select(run, budget=5, random_state=0)
    with pytest.raises(RunFolderError, match="no human answers yet"):
        train(run)


def test_select_needs_the_earlier_steps(tmp_path):
    items = [dict(item_id="a", text="x", image=None)]
    fresh = RunFolder.create(tmp_path / "fresh", items, classes=CLASSES, settings={})
    with pytest.raises(RunFolderError, match="run `act-sklearn annotate` first"):
        select(fresh, budget=1)


def test_partial_then_complete_review_through_csv_and_label_studio(run, tmp_path):
    sampler = select(run, budget=10, rule="threshold", explore=0.2, random_state=0)
    chosen = run.selected_ids()
    assert len(chosen) == 10 == sampler.reviewed_.sum()

    sheet = tmp_path / "batch1.csv"
    assert export(run, sheet, format="csv") == 10
    with open(sheet, newline="") as file:
        rows = list(csv.DictReader(file))
    suspicion = [float(r["error_proba"]) for r in rows]
    assert suspicion == sorted(suspicion, reverse=True)  # most suspicious first
    assert all(float(r["inclusion_proba"]) > 0 for r in rows)

    # a partial review: three answers
    for row, label in zip(rows, ["pos", "neg", "neg"]):
        row["label"] = label
    with open(sheet, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    outcome = import_reviews(run, sheet)
    assert len(outcome.taken) == 3 and len(run.reviews()) == 3

    # the rest through Label Studio: only the 7 pending items are exported
    tasks_path = tmp_path / "tasks.json"
    assert export(run, tasks_path, format="label-studio") == 7
    assert "<Choice value=\"neg\"/>" in (tmp_path / "tasks.config.xml").read_text()
    tasks = json.loads(tasks_path.read_text())
    exported = [
        dict(
            id=number,
            data=task["data"],
            annotations=[
                dict(
                    completed_by=1,
                    was_cancelled=False,
                    result=[dict(from_name="label", to_name="text", type="choices", value={"choices": ["pos"]})],
                )
            ],
        )
        for number, task in enumerate(tasks, start=1)
    ]
    export_path = tmp_path / "export.json"
    export_path.write_text(json.dumps(exported))
    import_reviews(run, export_path)
    assert sorted(run.reviews()) == sorted(chosen)
    assert review_rows(run) == []
    # train on what the reviewers said; the model and the estimate land in the run folder
    model = train(run)
    assert (run.path / "model.joblib").exists()
    assert model.n_human_labels_ == 10 and set(model.predict(["review 3"])) <= set(CLASSES)
    step = run.manifest()["steps"]["train"]
    assert step["pending_reviews"] == 0 and 0 <= step["label_accuracy"] <= 1
    # importing the first sheet again changes nothing
    before = _files(run)["reviews.csv"]
    again = import_reviews(run, sheet)
    assert again.taken == {} and again.already_known == 3
    assert _files(run)["reviews.csv"] == before


@pytest.mark.parametrize(
    "sheet_text, message",
    [
        ("item_id,label\nnot-an-item,pos\n", "not selected for review"),
        ("item_id,label\n{first},maybe\n", "not a class"),
        ("item_id,answer\n{first},pos\n", "no 'label' column"),
    ],
)
def test_bad_review_file_leaves_the_run_folder_intact(run, tmp_path, sheet_text, message):
    select(run, budget=5, random_state=0)
    bad = tmp_path / "bad.csv"
    bad.write_text(sheet_text.format(first=run.selected_ids()[0]))
    before = _files(run)
    with pytest.raises(ReviewFileError, match=message):
        import_reviews(run, bad)
    assert _files(run) == before


def test_annotate_and_criticize_resume_on_their_whole_configuration(tmp_path):
    from fake_llm import FakeLLM

    from act_sklearn import MLLMAnnotator, MLLMCriticizer
    from act_sklearn.workflow.steps import annotate, criticize

    labels = ["cat", "dog", "bird"]
    items = [dict(item_id=f"t{i}", text=f"item {i}: a {labels[i % 3]}", image=None) for i in range(12)]
    run = RunFolder.create(tmp_path / "run", items, classes=labels, settings={})
    fake = FakeLLM()
    backend = fake.backend(tmp_path)
    assert annotate(run, MLLMAnnotator(backend, classes=labels))
    assert list(run.machine_labels()) == [labels[i % 3] for i in range(12)]
    assert "proba:dog" in run.read_table("machine.csv")
    assert criticize(run, MLLMCriticizer(backend, strategy="naive"))
    assert run.error_proba().shape == (12,)
    assert run.manifest()["steps"]["annotate"]["usage"]["requests"] == 12
    assert run.manifest()["steps"]["criticize"]["config"]["strategy"] == "naive"
    select(run, budget=3, random_state=0)
    n_requests = len(fake.requests)

    # the same settings: both steps are skipped, nothing is sent, nothing goes stale
    assert not annotate(run, MLLMAnnotator(backend, classes=labels, progress=True))
    assert not criticize(run, MLLMCriticizer(backend, strategy="naive", on_error="skip"))
    assert len(fake.requests) == n_requests and run.is_current("select")

    # another strategy: new criticism requests, and select (so train) is stale until it runs again
    assert criticize(run, MLLMCriticizer(backend, strategy="cot"))
    assert len(fake.requests) == n_requests + 12
    assert not run.is_current("select")
    stale = "`act-sklearn criticize` ran again after `act-sklearn select`; run `act-sklearn select` first"
    with pytest.raises(RunFolderError, match=stale):
        train(run)
    select(run, budget=3, random_state=0)
    assert run.is_current("select")

    # other annotator instructions: new annotation requests; criticize and select are stale
    n_requests = len(fake.requests)
    assert annotate(run, MLLMAnnotator(backend, classes=labels, instructions="Name the animal."))
    assert len(fake.requests) == n_requests + 12
    assert not run.is_current("criticize") and not run.is_current("select")
    with pytest.raises(RunFolderError, match="run `act-sklearn criticize` first"):
        select(run, budget=3)
    # the criticism again with its earlier settings: the response cache answers (the
    # machine labels are the same), so the step runs but pays nothing
    assert criticize(run, MLLMCriticizer(backend, strategy="cot"))
    assert len(fake.requests) == n_requests + 12
    assert run.manifest()["steps"]["criticize"]["usage"]["cache_hits"] == 12


def test_train_on_image_items_uses_their_pixels(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    items = []
    for i in range(40):
        shade = 220 if i % 2 else 30  # "light" and "dark" images
        pixels = np.clip(rng.normal(shade, 20, (12, 12)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"img{i}.png")
        items.append(dict(item_id=f"i{i}", text=None, image=str(tmp_path / f"img{i}.png"), gold=None))
    classes = ["dark", "light"]
    run = RunFolder.create(tmp_path / "run", items, classes=classes, settings={})
    machine = [classes[i % 2] if i % 5 else classes[1 - i % 2] for i in range(40)]  # every fifth is wrong
    run.write_table("machine.csv", {"item_id": run.item_ids(), "machine_label": machine})
    run.finish_step("annotate")
    suspicion = [0.9 if i % 5 == 0 else 0.1 for i in range(40)]
    run.write_table("criticism.csv", {"item_id": run.item_ids(), "error_proba": suspicion})
    run.finish_step("criticize")
    select(run, budget=8, explore=0.0)
    sheet = tmp_path / "answers.csv"
    sheet.write_text("item_id,label\n" + "".join(f"{i},{classes[int(i[1:]) % 2]}\n" for i in run.selected_ids()))
    import_reviews(run, sheet)
    model = train(run)
    assert model.n_human_labels_ == 8
    paths = np.array([[item["image"]] for item in items], dtype=object)
    assert np.mean(model.predict(paths) == [classes[i % 2] for i in range(40)]) == 1.0


def test_train_refuses_items_without_a_common_input(tmp_path):
    mixed = [dict(item_id="a", text="words", image=None), dict(item_id="b", text=None, image="b.png")]
    folder = RunFolder.create(tmp_path / "mixed", mixed, classes=CLASSES, settings={})
    folder.write_table("machine.csv", {"item_id": ["a", "b"], "machine_label": CLASSES})
    folder.finish_step("annotate")
    folder.write_table("criticism.csv", {"item_id": ["a", "b"], "error_proba": ["0.5", "0.5"]})
    folder.finish_step("criticize")
    select(folder, budget=1, explore=0.0)
    with pytest.raises(RunFolderError, match="a text for every item or an image for every item"):
        train(folder)


def _answer(run, tmp_path, name, truth):
    """Answer every item awaiting review with ``truth`` (item id -> label), through a sheet."""
    sheet = tmp_path / name
    assert export(run, sheet) >= 1
    with open(sheet, newline="") as file:
        ids = [row["item_id"] for row in csv.DictReader(file)]
    sheet.write_text("item_id,label\n" + "".join(f"{i},{truth[i]}\n" for i in ids))
    import_reviews(run, sheet)
    return ids


def test_review_in_rounds_draws_each_round_among_the_unanswered_items(run, tmp_path):
    from act_sklearn import ACTSampler

    truth = dict(zip(run.item_ids(), run.gold()))
    select(run, budget=12, rounds=3, explore=0.2, random_state=5)
    rounds, round_proba = run.selection_rounds()
    assert run.selection()[1].sum() == 4 and set(rounds) == {0, 1}
    with pytest.raises(RunFolderError, match=r"4 of the 4 items selected so far still wait for an answer"):
        select_next_round(run)
    first = _answer(run, tmp_path, "round1.csv", truth)
    answers = run.reviews().copy()

    drawn = select_next_round(run)
    assert drawn.sum() == 4 and not any(drawn[run.item_ids().index(i)] for i in first)
    assert run.reviews() == answers  # answered items untouched
    inclusion_proba, selected = run.selection()
    rounds, round_proba = run.selection_rounds()
    assert selected.sum() == 8 and np.all(inclusion_proba[rounds == 1] == 1.0)
    np.testing.assert_array_equal(inclusion_proba[rounds != 1], round_proba[rounds != 1])
    assert np.all(inclusion_proba > 0)
    # a partial answer: the next round waits, naming the command that imports the rest
    ids = [i for i, d in zip(run.item_ids(), drawn) if d]
    (tmp_path / "partial.csv").write_text(f"item_id,label\n{ids[0]},{truth[ids[0]]}\n")
    import_reviews(run, tmp_path / "partial.csv")
    with pytest.raises(RunFolderError, match=r"3 of the 8 items .*`act-sklearn import --run"):
        select_next_round(run)
    _answer(run, tmp_path, "round2.csv", truth)
    # the same first round again is harmless and keeps round 2; another one is refused
    before = _files(run)["selection.csv"]
    select(run, budget=12, rounds=3, explore=0.2, random_state=5)
    assert _files(run)["selection.csv"] == before
    with pytest.raises(RunFolderError, match="another selection"):
        select(run, budget=12, rounds=2, explore=0.2, random_state=5)
    select_next_round(run)
    with pytest.raises(RunFolderError, match="all 3 rounds"):
        select_next_round(run)
    rounds, _ = run.selection_rounds()
    assert np.bincount(rounds).tolist() == [28, 4, 4, 4]

    # the rounds are the ones ACTSampler draws in one go with the same answers
    sampler = ACTSampler(budget=12, rounds=3, explore=0.2, random_state=5)
    sampler.fit(run.error_proba(), run.gold(), machine_labels=run.machine_labels())
    np.testing.assert_array_equal(rounds, sampler.round_)
    np.testing.assert_allclose(run.selection()[0], sampler.inclusion_proba_)
    np.testing.assert_allclose(run.selection_rounds()[1], sampler.round_inclusion_proba_)

    _answer(run, tmp_path, "round3.csv", truth)
    model = train(run)  # weights the earlier rounds' answers as certain
    assert model.n_human_labels_ == 12
    np.testing.assert_allclose(model.inclusion_proba_, run.selection()[0])
    assert run.steps()["select"]["round_budgets"] == [4, 4, 4]


def test_a_one_round_selection_has_no_next_round(run):
    select(run, budget=5, random_state=0)
    rounds, round_proba = run.selection_rounds()
    np.testing.assert_array_equal(rounds, run.selection()[1].astype(int))
    with pytest.raises(RunFolderError, match="drawn in one round"):
        select_next_round(run)
    with pytest.raises(ValueError, match="rounds=6 is more than the budget of 5"):
        select(run, budget=5, rounds=6)
