"""Items from files and the run folder: clear errors, atomic state, resumable steps."""

import json

import numpy as np

import pytest
from PIL import Image

from act_sklearn.review import ReviewFileError
from act_sklearn.workflow.items import read_items
from act_sklearn.workflow.run_folder import RunFolder, RunFolderError


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def items_csv(tmp_path):
    return _write(
        tmp_path / "items.csv",
        "id,review,img,sentiment\na1,Great film,,pos\na2,Dull,pics/2.png,neg\na3,\"Fine, I guess\",,pos\n",
    )


def test_read_items_from_csv_and_jsonl(items_csv, tmp_path):
    (tmp_path / "pics").mkdir()
    Image.new("L", (4, 4)).save(tmp_path / "pics" / "2.png")
    items = read_items(items_csv, id_column="id", text_column="review", image_column="img", label_column="sentiment")
    assert [i["item_id"] for i in items] == ["a1", "a2", "a3"]
    assert items[2]["text"] == "Fine, I guess" and items[1]["gold"] == "neg"
    assert items[0]["image"] is None and items[1]["image"] == str(tmp_path / "pics" / "2.png")

    jsonl = _write(tmp_path / "items.jsonl", '{"review": "a"}\n{"review": "b"}\n')
    assert [i["item_id"] for i in read_items(jsonl, text_column="review")] == ["0", "1"]


@pytest.mark.parametrize(
    "text, columns, line, message",
    [
        ("id,review\na1,x\n", dict(id_column="id", text_column="text"), 1, "no column 'text'"),
        ("id,review\na1,x\na2,y\na1,z\n", dict(id_column="id", text_column="review"), 4, "repeats the id 'a1'"),
        ("id,img\na1,\na2,missing.png\n", dict(id_column="id", image_column="img"), 3, "names the image 'missing.png'"),
    ],
)
def test_bad_item_files_name_the_file_and_line(tmp_path, text, columns, line, message):
    path = _write(tmp_path / "items.csv", text)
    with pytest.raises(ReviewFileError, match=message) as raised:
        read_items(path, **columns)
    assert raised.value.line == line and str(path) in str(raised.value)


def test_run_folder_round_trip_and_resume(items_csv, tmp_path):
    items = read_items(items_csv, id_column="id", text_column="review", label_column="sentiment")
    run = RunFolder.create(tmp_path / "run", items, classes=["pos", "neg"], settings={"budget": 0.5})
    assert run.item_ids() == ["a1", "a2", "a3"]
    assert run.read_table("oracle.csv")["gold"] == ["pos", "neg", "pos"]
    with pytest.raises(RunFolderError, match="run `act-sklearn annotate` first"):
        run.require("annotate")
    run.write_table("machine.csv", {"item_id": ["a1", "a2", "a3"], "machine_label": ["pos", "pos", "pos"]})
    run.finish_step("annotate", requests=3)
    run.require("annotate")
    assert run.manifest()["steps"]["annotate"]["requests"] == 3

    # the same command again resumes the same folder; other items are refused
    again = RunFolder.create(tmp_path / "run", items, classes=["pos", "neg"], settings={"budget": 0.5})
    assert again.manifest()["steps"].keys() == {"annotate"}
    with pytest.raises(RunFolderError, match="another job"):
        RunFolder.create(tmp_path / "run", items[:2], classes=["pos", "neg"], settings={})
    edited = [dict(item, text=item["text"].upper()) for item in items]
    with pytest.raises(RunFolderError, match="another job"):
        RunFolder.create(tmp_path / "run", edited, classes=["pos", "neg"], settings={})

    run.add_reviews({"a2": "neg"}, source="first.csv")
    run.add_reviews({"a2": "pos", "a3": "pos"}, source="second.csv")  # earlier answers are kept
    assert run.reviews() == {"a2": "neg", "a3": "pos"}
    assert run.read_table("reviews.csv")["source"] == ["first.csv", "second.csv"]


def test_missing_run_folder_is_a_clear_error(tmp_path):
    with pytest.raises(RunFolderError, match="is not a run folder"):
        RunFolder(tmp_path / "nowhere").manifest()


def test_manifest_is_plain_json(items_csv, tmp_path):
    items = read_items(items_csv, id_column="id", text_column="review")
    run = RunFolder.create(tmp_path / "run", items, classes=["pos", "neg"], settings={"rule": "threshold"})
    manifest = json.loads((run.path / "manifest.json").read_text())
    assert manifest["settings"] == {"rule": "threshold"} and manifest["classes"] == ["pos", "neg"]
    assert not (run.path / "oracle.csv").exists()  # no gold column, no oracle


def _started(tmp_path):
    items = [dict(item_id=f"i{k}", text=f"text {k}", image=None) for k in range(4)]
    return RunFolder.create(tmp_path / "run", items, classes=["pos", "neg"], settings={})


def test_typed_accessors_validate_the_files_they_read(tmp_path):
    run = _started(tmp_path)
    run.write_machine_labels(["pos", "neg", "pos", "pos"], np.full((4, 2), 0.5), ["pos", "neg"])
    run.write_error_proba([0.1, 0.9, 0.4, 0.0])
    run.write_selection([1.0, 0.5, 0.25, 0.0], [True, True, False, False])
    assert run.machine_labels().tolist() == ["pos", "neg", "pos", "pos"]
    np.testing.assert_array_equal(run.error_proba(), [0.1, 0.9, 0.4, 0.0])
    inclusion_proba, selected = run.selection()
    assert inclusion_proba.tolist() == [1.0, 0.5, 0.25, 0.0] and selected.tolist() == [True, True, False, False]
    assert run.selected_ids() == ["i0", "i1"] and run.gold() is None

    (run.path / "criticism.csv").write_text("item_id,error_proba\ni0,0.1\ni1,2\ni2,0\ni3,0\n")
    with pytest.raises(RunFolderError, match=r"must lie in \[0, 1\]; run `act-sklearn criticize` again"):
        run.error_proba()
    (run.path / "criticism.csv").write_text("item_id,error_proba\ni0,0.1\ni1,oops\ni2,0\ni3,0\n")
    with pytest.raises(RunFolderError, match="non-number"):
        run.error_proba()
    (run.path / "criticism.csv").write_text("item_id,error_proba\ni0,0.1\ni1,0.2\n")
    with pytest.raises(RunFolderError, match="does not cover the items"):
        run.error_proba()
    (run.path / "machine.csv").write_text("item_id,machine_label\ni0,pos\ni1,cat\ni2,pos\ni3,pos\n")
    with pytest.raises(RunFolderError, match="outside the classes: \\['cat'\\]"):
        run.machine_labels()


def test_a_step_is_stale_after_an_earlier_step_runs_again_or_its_input_changes(tmp_path):
    run = _started(tmp_path)
    run.write_machine_labels(["pos"] * 4, np.full((4, 2), 0.5), ["pos", "neg"])
    run.finish_step("annotate", config={"model": "a"})
    run.write_error_proba([0.5] * 4)
    run.finish_step("criticize", config={"strategy": "naive"})
    run.write_selection([0.5] * 4, [True, True, False, False])
    run.finish_step("select")
    assert run.is_current("select") and run.is_current("criticize", {"strategy": "naive"})
    assert not run.is_current("criticize", {"strategy": "cot"})

    run.finish_step("criticize", config={"strategy": "cot"})  # ran again, even with the same output
    assert run.is_current("criticize") and not run.is_current("select")
    assert run.stale_reason("select") == "`act-sklearn criticize` ran again after `act-sklearn select`"
    run.finish_step("select")
    assert run.is_current("select")

    run.write_machine_labels(["neg"] * 4, np.full((4, 2), 0.5), ["pos", "neg"])  # edited by hand
    assert run.stale_reason("criticize") == "machine.csv changed since `act-sklearn criticize` ran"
    with pytest.raises(RunFolderError, match="run `act-sklearn criticize` first"):
        run.require("select")


def test_the_lock_names_its_holder_and_is_reentrant(tmp_path):
    import os

    from act_sklearn.workflow.run_folder import RunFolderBusy

    run = _started(tmp_path)
    other = RunFolder(run.path)  # another open of the same folder, as a second process makes
    with run.locked():
        with run.locked():  # the steps a command runs take it again
            with pytest.raises(RunFolderBusy, match=f"process {os.getpid()} .* is writing to it.*--wait"):
                with other.locked():
                    pass
    with other.locked():  # released
        pass


def test_the_selection_records_each_items_round_and_reads_older_files_as_one_round(tmp_path):
    run = _started(tmp_path)
    run.write_selection([1.0, 0.5, 0.25, 0.25], [True, True, False, False], rounds=[1, 2, 0, 0],
                        round_inclusion_proba=[0.6, 0.5, 0.25, 0.25])
    rounds, round_proba = run.selection_rounds()
    assert rounds.tolist() == [1, 2, 0, 0] and round_proba.tolist() == [0.6, 0.5, 0.25, 0.25]
    assert run.selection()[0].tolist() == [1.0, 0.5, 0.25, 0.25]
    # a selection.csv written before rounds: one round, its pi the round's
    (run.path / "selection.csv").write_text("item_id,inclusion_proba,selected\ni0,1.0,1\ni1,0.5,1\ni2,0.25,0\ni3,0.25,0\n")
    rounds, round_proba = run.selection_rounds()
    assert rounds.tolist() == [1, 1, 0, 0] and round_proba.tolist() == [1.0, 0.5, 0.25, 0.25]
    (run.path / "selection.csv").write_text(
        "item_id,inclusion_proba,selected,round,round_inclusion_proba\n"
        "i0,1.0,1,1,1.0\ni1,0.5,1,0,0.5\ni2,0.25,0,0,0.25\ni3,0.25,0,0,0.25\n"
    )
    with pytest.raises(RunFolderError, match="'round' must be 0 exactly where 'selected' is 0"):
        run.selection_rounds()
