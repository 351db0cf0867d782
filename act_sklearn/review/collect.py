"""Bring reviewers' answers into a run: checked, traced, and never silently overwritten."""

from collections import defaultdict
from dataclasses import dataclass, field

from .files import read_records, read_review_rows
from .label_studio import is_label_studio_json, read_label_studio_json
from .records import ReviewFileError


def read_reviews(path):
    """Every answer in a review file: our CSV/JSONL sheets or Label Studio's JSON, JSON_MIN or CSV export."""
    columns, records = read_records(path)
    if columns is None and is_label_studio_json(records):
        return read_label_studio_json(path, records)
    return read_review_rows(path, columns, records)


@dataclass
class ReviewImport:
    """What an import did.

    ``taken`` maps item ids to their new human labels; ``conflicts`` lists items
    whose reviewers disagree (or disagree with an answer taken earlier) and that
    were not taken: ``(item_id, {label: [source:line, ...]})``.
    """

    taken: dict = field(default_factory=dict)
    conflicts: list = field(default_factory=list)
    already_known: int = 0


def collect_reviews(reviews, *, selected_ids, classes, known=None):
    """Check ``reviews`` against the selection and the label set, and resolve agreement.

    Parameters
    ----------
    reviews : list of Review
    selected_ids : collection of str
        Items selected for review; an answer for any other item is an error.
    classes : list
        The label set; answers are matched on their text (a CSV holds "3" for 3).
    known : dict or None
        Human labels taken by earlier imports (item id -> label).

    Raises
    ------
    ReviewFileError
        For an unknown label, an item that was not selected, or one reviewer
        answering the same item twice, naming the file and line of the first.
    """
    known = known or {}
    selected_ids = set(selected_ids)
    by_text = {str(c): c for c in classes}
    answers = defaultdict(list)  # item id -> [(label, review)]
    seen = {}
    for review in reviews:
        if review.item_id not in selected_ids:
            raise ReviewFileError(
                review.source,
                review.line,
                f"answers item {review.item_id!r}, which was not selected for review.",
                "Only the exported items can be reviewed; remove this row (or check the run folder).",
            )
        label = by_text.get(str(review.label).strip())
        if label is None:
            raise ReviewFileError(
                review.source,
                review.line,
                f"labels item {review.item_id!r} {review.label!r}, which is not a class.",
                f"Use one of {list(by_text)}.",
            )
        key = (review.item_id, review.reviewer)
        if key in seen:
            raise ReviewFileError(
                review.source,
                review.line,
                f"answers item {review.item_id!r} again (first at line {seen[key]}).",
                "Keep one row per item (or give each reviewer's row a distinct 'reviewer').",
            )
        seen[key] = review.line
        answers[review.item_id].append((label, review))

    result = ReviewImport()
    for item_id, given in answers.items():
        labels = {label for label, _ in given}
        if item_id in known:
            labels.add(known[item_id])
        if len(labels) > 1:
            where = defaultdict(list)
            for label, review in given:
                where[label].append(f"{review.source}:{review.line}")
            if item_id in known:
                where[known[item_id]].append("taken earlier")
            result.conflicts.append((item_id, dict(where)))
        elif item_id in known:
            result.already_known += 1
        else:
            result.taken[item_id] = labels.pop()
    return result
