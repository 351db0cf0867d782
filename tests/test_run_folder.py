"""Items from files and the run folder: clear errors, atomic state, resumable steps."""

import json

import pytest

from act_sklearn.review import ReviewFileError
from act_sklearn.review.items import read_items
from act_sklearn.run_folder import RunFolder, RunFolderError


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
