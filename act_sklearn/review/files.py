"""Review sheets as CSV or JSONL: written for reviewers, read back with every answer traced to its line."""

import csv
import json
from pathlib import Path

from .._atomic import write_atomically
from .records import ITEM_ID, LABEL, Review, ReviewFileError

SHEET_FORMATS = (".csv", ".jsonl")
REVIEWER_COLUMNS = ("reviewer", "annotator")  # ours, then Label Studio's CSV/JSON_MIN exports


def write_review_sheet(path, rows):
    """Write review rows (dicts with the same keys) to ``path`` (.csv or .jsonl), with an empty ``label``."""
    path = Path(path)
    rows = [{**row, LABEL: row.get(LABEL, "")} for row in rows]
    if path.suffix not in SHEET_FORMATS:
        raise ValueError(f"{path}: review sheets are .csv or .jsonl; got {path.suffix!r}.")
    if path.suffix == ".csv":
        columns = list(rows[0]) if rows else [ITEM_ID, LABEL]

        def write(file):
            writer = csv.DictWriter(file, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)

    else:

        def write(file):
            for row in rows:
                file.write(json.dumps(row, ensure_ascii=False) + "\n")

    write_atomically(path, write)


def read_records(path):
    """``(line, record)`` pairs of a CSV, JSONL or JSON-list file, with clear errors for broken files."""
    path = Path(path)
    if not path.is_file():
        raise ReviewFileError(path, 0, "does not exist.", "Check the path.")
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix == ".csv":
        reader = csv.DictReader(text.splitlines())
        records = [(reader.line_num, row) for row in reader]
        return reader.fieldnames or [], records
    if path.suffix == ".jsonl":
        records = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append((number, json.loads(line)))
            except json.JSONDecodeError as error:
                raise ReviewFileError(
                    path,
                    number,
                    f"is not complete JSON ({error.msg}); the file may be truncated.",
                    "Export it again, or delete this line to import the others.",
                ) from None
        return None, records
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ReviewFileError(
                path,
                error.lineno,
                f"is not valid JSON ({error.msg}); the file may be truncated.",
                "Export it again from Label Studio.",
            ) from None
        if not isinstance(data, list):
            raise ReviewFileError(
                path, 1, "holds a JSON object, not a list of tasks.", "Use Label Studio's JSON or JSON_MIN export."
            )
        return None, list(enumerate(data, start=1))
    raise ReviewFileError(
        path, 0, f"has the unknown extension {path.suffix!r}.", "Import a .csv, .jsonl or Label Studio .json file."
    )


def read_review_rows(path, columns, records):
    """Reviews from flat rows (our sheets, Label Studio's CSV and JSON_MIN exports).

    Rows with an empty or absent label are items still pending, not reviews.
    """
    present = set(columns) if columns is not None else None
    for needed in (ITEM_ID, LABEL):
        if present is not None and needed not in present:
            raise ReviewFileError(
                path,
                1,
                f"has no {needed!r} column (columns: {sorted(present)}).",
                f"Keep the {ITEM_ID!r} column of the exported sheet and write each answer in {LABEL!r}.",
            )
    for line, row in records:
        if not isinstance(row, dict):
            raise ReviewFileError(
                path, line, "is not a JSON object.", f"Write one object per line with {ITEM_ID!r} and {LABEL!r}."
            )
        if ITEM_ID not in row:
            raise ReviewFileError(path, line, f"has no {ITEM_ID!r} field.", f"Give every record {ITEM_ID!r}.")
    if records and not any(LABEL in row for _, row in records):  # a misspelt key, not a pending file
        raise ReviewFileError(
            path, records[0][0], f"has no {LABEL!r} field in any record.", f"Write each answer in {LABEL!r}."
        )
    reviews = []
    for line, row in records:
        label = row.get(LABEL)  # absent or empty: the item is still pending
        if label is None or (isinstance(label, str) and not label.strip()):
            continue
        reviewer = next((str(row[c]) for c in REVIEWER_COLUMNS if row.get(c) not in (None, "")), "")
        reviews.append(Review(str(row[ITEM_ID]), label, reviewer, str(path), line))
    return reviews
