"""Review I/O: sheets and Label Studio tasks out, real Label Studio exports and sheets back in."""

import base64
import json
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from act_sklearn._atomic import write_atomically
from act_sklearn.review import (
    ReviewFileError,
    collect_reviews,
    label_studio_tasks,
    labeling_config,
    read_reviews,
    write_label_studio_tasks,
    write_review_sheet,
)

LABEL_STUDIO = Path(__file__).parent / "data" / "label_studio"
EXPORTS = ["export.json", "export_min.json", "export.csv"]
ITEMS = ["item-001", "item-002", "item-003", "item-004"]


def rows(n=4):
    return [
        dict(
            item_id=f"item-{i:03d}",
            text=f"review number {i}",
            machine_label=["Positive", "Negative"][i % 2],
            error_proba=round(0.9 - 0.1 * i, 2),
            inclusion_proba=0.25,
        )
        for i in range(1, n + 1)
    ]


@pytest.mark.parametrize("name", EXPORTS)
def test_real_label_studio_exports_give_the_same_answers(name):
    reviews = read_reviews(LABEL_STUDIO / name)
    outcome = collect_reviews(reviews, selected_ids=ITEMS, classes=["Positive", "Negative"])
    # item-001 answered, item-002 skipped (pending), item-003 conflicting, item-004 pending
    assert outcome.taken == {"item-001": "Positive"}
    assert [item for item, _ in outcome.conflicts] == ["item-003"]
    assert set(outcome.conflicts[0][1]) == {"Positive", "Negative"}
    assert {r.reviewer for r in reviews if r.item_id == "item-003"} == {"1", "2"}


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_partial_then_complete_review_sheet(tmp_path, suffix):
    sheet = tmp_path / f"review{suffix}"
    write_review_sheet(sheet, rows())
    written = read_reviews(sheet)
    assert written == []  # nothing answered yet: every item pending

    def answer(labels):
        records = [{**row, "label": labels.get(row["item_id"], "")} for row in rows()]
        write_review_sheet(sheet, records)
        return read_reviews(sheet)

    first = collect_reviews(answer({"item-002": "Negative"}), selected_ids=ITEMS, classes=["Positive", "Negative"])
    assert first.taken == {"item-002": "Negative"}
    complete = {"item-001": "Positive", "item-002": "Negative", "item-003": "Positive", "item-004": "Negative"}
    second = collect_reviews(answer(complete), selected_ids=ITEMS, classes=["Positive", "Negative"], known=first.taken)
    assert second.already_known == 1
    assert second.taken == {k: v for k, v in complete.items() if k != "item-002"}
    changed = collect_reviews(
        answer({"item-002": "Positive"}), selected_ids=ITEMS, classes=["Positive", "Negative"], known=first.taken
    )
    assert changed.taken == {} and changed.conflicts[0][0] == "item-002"


def test_numeric_classes_match_their_text_in_a_csv(tmp_path):
    sheet = tmp_path / "review.csv"
    write_review_sheet(sheet, [dict(item_id="7", machine_label=3, label="5")])
    outcome = collect_reviews(read_reviews(sheet), selected_ids=["7"], classes=list(range(10)))
    assert outcome.taken == {"7": 5}


def _sheet(tmp_path, text, suffix=".csv"):
    path = tmp_path / f"answers{suffix}"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "text, suffix, line, message",
    [
        ("item_id,answer\nitem-001,Positive\n", ".csv", 1, "no 'label' column"),
        ("item_id,label\nitem-001,Positive\nitem-003,Great\n", ".csv", 3, "'Great', which is not a class"),
        ("item_id,label\nitem-001,Positive\nitem-001,Negative\n", ".csv", 3, "again \\(first at line 2\\)"),
        ("item_id,label\nitem-009,Positive\n", ".csv", 2, "not selected for review"),
        ('{"item_id": "item-001", "label": "Positive"}\n{"item_id": "item-00', ".jsonl", 2, "truncated"),
        ('{"item_id": "item-001"}\n', ".jsonl", 1, "no 'label' field"),
        ('[{"id": 1, "annotations": [], "data": {"text": "x"}}]', ".json", 1, "without data.item_id"),
    ],
)
def test_bad_review_files_name_the_file_the_line_and_the_fix(tmp_path, text, suffix, line, message):
    path = _sheet(tmp_path, text, suffix)
    with pytest.raises(ReviewFileError, match=message) as raised:
        collect_reviews(read_reviews(path), selected_ids=ITEMS, classes=["Positive", "Negative"])
    assert raised.value.path == str(path) and raised.value.line == line
    assert f"{path}, line {line}" in str(raised.value)


def test_label_studio_tasks_carry_prediction_score_and_inclusion_proba(tmp_path):
    tasks = label_studio_tasks(rows())
    path = tmp_path / "tasks.json"
    write_label_studio_tasks(path, tasks)
    loaded = json.loads(path.read_text())
    first = loaded[0]
    assert first["data"]["item_id"] == "item-001" and first["data"]["inclusion_proba"] == 0.25
    assert "id" not in first["data"] and "label" not in first["data"]
    prediction = first["predictions"][0]
    assert prediction["score"] == 0.8
    assert prediction["result"][0]["value"]["choices"] == ["Negative"]
    assert prediction["result"][0]["from_name"] == "label" and prediction["result"][0]["to_name"] == "text"

    config = ElementTree.fromstring(labeling_config(["Positive", "Negative"]))
    choices = config.find("Choices")
    assert choices.get("name") == "label" and choices.get("toName") == config.find("Text").get("name")
    assert [c.get("value") for c in choices] == ["Positive", "Negative"]


def test_images_travel_as_data_urls_or_local_files(tmp_path):
    image_path = tmp_path / "images" / "shoe.png"
    image_path.parent.mkdir()
    Image.fromarray(np.arange(28 * 28, dtype=np.uint8).reshape(28, 28)).save(image_path)
    row = dict(rows(1)[0], image=str(image_path))
    task = label_studio_tasks([row], kind="image")[0]
    header, encoded = task["data"]["image"].split(",", 1)
    assert header == "data:image/png;base64" and base64.b64decode(encoded) == image_path.read_bytes()
    assert task["predictions"][0]["result"][0]["to_name"] == "image"
    local = label_studio_tasks([row], kind="image", image_mode="local-files", document_root=tmp_path)[0]
    assert local["data"]["image"] == "/data/local-files/?d=images/shoe.png"
    with pytest.raises(ValueError, match="document_root"):
        label_studio_tasks([row], kind="image", image_mode="local-files")


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "state.json"
    path.write_text("old")

    def failing(file):
        file.write("half of the new")
        raise OSError("disk full")

    with pytest.raises(OSError):
        write_atomically(path, failing)
    assert path.read_text() == "old"
    assert list(tmp_path.iterdir()) == [path]
