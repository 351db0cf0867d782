"""Items to label, read from CSV, JSONL or Parquet, with clear errors for bad files."""

from pathlib import Path

from ..review.files import read_records
from ..review.records import ReviewFileError


def read_items(path, *, id_column=None, text_column=None, image_column=None, label_column=None):
    """Items of a labelling job as dicts with ``item_id``, ``text``, ``image`` and ``gold``.

    Parameters
    ----------
    path : str or Path
        A .csv, .jsonl or .parquet file (Parquet needs pandas with pyarrow).
    id_column : str or None
        Column of unique item ids; None numbers the rows from 0.
    text_column, image_column : str or None
        The text and/or the image file (a path; relative paths are taken from the
        file's folder, and kept absolute). At least one is needed.
    label_column : str or None
        Gold labels (simulations only: they act as the reviewers).

    Raises
    ------
    ReviewFileError
        For a missing column or a duplicated id, naming the file and the line.
    """
    path = Path(path)
    if text_column is None and image_column is None:
        raise ValueError("give text_column and/or image_column: the items need content to label.")
    if path.suffix == ".parquet":
        columns, records = _read_parquet(path)
    else:
        columns, records = read_records(path)
    wanted = [c for c in (id_column, text_column, image_column, label_column) if c is not None]
    present = set(columns) if columns is not None else set().union(*(r for _, r in records)) if records else set()
    for column in wanted:
        if column not in present:
            raise ReviewFileError(
                path,
                1,
                f"has no column {column!r} (columns: {sorted(present)}).",
                "Name the right column with --id-column/--text-column/--image-column/--label-column.",
            )
    items, first_line = [], {}
    for row_number, (line, record) in enumerate(records):
        item_id = str(record.get(id_column)) if id_column else str(row_number)
        if item_id in first_line:
            raise ReviewFileError(
                path,
                line,
                f"repeats the id {item_id!r} (first at line {first_line[item_id]}).",
                "Give every item a unique id, or leave out --id-column to number the rows.",
            )
        first_line[item_id] = line
        image = record.get(image_column) if image_column else None
        if image not in (None, ""):
            image = _image_file(path, line, image)
        items.append(
            dict(
                item_id=item_id,
                text=record.get(text_column) if text_column else None,
                image=image or None,
                gold=record.get(label_column) if label_column else None,
            )
        )
    return items


def _image_file(path, line, image):
    """The absolute path of an item's image file, which must exist."""
    image_path = (path.parent / str(image)).resolve()
    if not image_path.is_file():
        raise ReviewFileError(
            path,
            line,
            f"names the image {str(image)!r}, which is not a file ({image_path}).",
            "Image paths are relative to the input file's folder (or absolute); fix the path or the --image-column.",
        )
    return str(image_path)


def _read_parquet(path):
    try:
        import pandas as pd

        frame = pd.read_parquet(path)
    except ImportError as error:
        raise ImportError(
            f"reading {path} needs pandas and pyarrow: pip install pandas pyarrow"
        ) from error
    records = frame.to_dict(orient="records")
    return list(frame.columns), [(number, record) for number, record in enumerate(records, start=1)]
