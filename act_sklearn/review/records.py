"""What a review file holds once read: one answer per (item, reviewer), with where it came from."""

from dataclasses import dataclass


class ReviewFileError(ValueError):
    """A review file that cannot be taken as it is; the message names the file, the line and the fix."""

    def __init__(self, path, line, problem, fix):
        where = f"{path}, line {line}" if line else str(path)
        super().__init__(f"{where}: {problem} {fix}")
        self.path, self.line = str(path), line


@dataclass(frozen=True)
class Review:
    """One reviewer's answer for one item.

    ``label`` is None when the reviewer skipped the item (it stays pending).
    ``line`` is the 1-based line (CSV, JSONL) or record number (JSON) in ``source``.
    """

    item_id: str
    label: object
    reviewer: str
    source: str
    line: int


# Columns of the review sheets (CSV/JSONL) and the data keys of Label Studio tasks.
ITEM_ID = "item_id"
LABEL = "label"  # the reviewer's answer; also the Label Studio <Choices name>
