"""Label Studio tasks out, Label Studio exports back in.

Facts this module relies on (checked against Label Studio 1.23.2):

* Imported tasks are ``{"data": {...}, "predictions": [...]}``. A prediction's
  ``score`` feeds the Data Manager's "Prediction score" column, so reviewers can
  sort by suspicion; its ``result`` pre-selects the machine label. Label Studio
  assigns its own task ids, so items are matched on ``data.item_id``; ``id`` and
  the export's own column names are never used as data keys.
* One ``model_version`` per project: predictions of other versions are neither
  pre-filled nor scored.
* Images travel as data URLs (shown as they are; every export repeats them) or
  as ``/data/local-files/?d=<path under the document root>`` with local-file
  serving enabled.
* The JSON export lists every task with its ``annotations``; a skipped task has
  ``was_cancelled: true`` and an empty ``result``; two reviewers give two
  annotations. JSON_MIN and CSV give one row per non-cancelled annotation with
  the data keys, the ``<Choices name>`` column and ``annotator``.
"""

import base64
import json
import mimetypes
from pathlib import Path
from xml.sax.saxutils import quoteattr

from .._atomic import write_atomically
from .records import ITEM_ID, LABEL, Review, ReviewFileError

MODEL_VERSION = "act-sklearn"


def labeling_config(classes, *, kind="text"):
    """Label Studio labeling config: one single choice among ``classes`` for a text or an image."""
    if kind not in ("text", "image"):
        raise ValueError(f"kind must be 'text' or 'image'; got {kind!r}.")
    tag = "Text" if kind == "text" else "Image"
    choices = "\n".join(f"    <Choice value={quoteattr(str(c))}/>" for c in classes)
    return (
        f'<View>\n  <{tag} name="{kind}" value="${kind}"/>\n'
        f'  <Choices name="{LABEL}" toName="{kind}" choice="single" showInline="true">\n'
        f"{choices}\n  </Choices>\n</View>\n"
    )


def image_reference(path, *, mode="data-url", document_root=None):
    """How a task points at an image file: a data URL, or a local-files URL under ``document_root``."""
    path = Path(path)
    if mode == "data-url":
        mime = mimetypes.guess_type(path.name)[0] or "image/png"
        return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"
    if mode == "local-files":
        if document_root is None:
            raise ValueError("image mode 'local-files' needs document_root (LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT).")
        root = Path(document_root).resolve()
        try:
            relative = path.resolve().relative_to(root)
        except ValueError:
            raise ValueError(
                f"image {path} is not under the document root {root}; pass the folder that Label Studio serves "
                "(LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT) and that holds every image."
            ) from None
        return f"/data/local-files/?d={relative.as_posix()}"
    raise ValueError(f"image mode must be 'data-url' or 'local-files'; got {mode!r}.")


def label_studio_tasks(rows, *, kind="text", image_mode="data-url", document_root=None):
    """Tasks for review rows (``item_id``, ``text`` or ``image``, ``machine_label``, ``error_proba``, ...).

    The machine label is the prediction, its score the error probability (sort
    descending: most suspicious first), and every other column stays in ``data``
    (``inclusion_proba`` among them) so that nothing needed later is lost.
    """
    tasks = []
    for row in rows:
        data = {key: value for key, value in row.items() if key != LABEL}
        if kind == "image":
            data["image"] = image_reference(row["image"], mode=image_mode, document_root=document_root)
        prediction = {
            "model_version": MODEL_VERSION,
            "score": float(row["error_proba"]),
            "result": [
                {
                    "from_name": LABEL,
                    "to_name": kind,
                    "type": "choices",
                    "value": {"choices": [str(row["machine_label"])]},
                }
            ],
        }
        tasks.append({"data": data, "predictions": [prediction]})
    return tasks


def write_label_studio_tasks(path, tasks):
    write_atomically(path, lambda file: json.dump(tasks, file, ensure_ascii=False, indent=1))


def read_label_studio_json(path, records):
    """Reviews from Label Studio's JSON export (tasks with ``annotations``)."""
    reviews = []
    for number, task in records:
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            raise ReviewFileError(path, number, "is not a Label Studio task (no 'data').", "Use the JSON export.")
        item_id = task["data"].get(ITEM_ID)
        if item_id is None:
            raise ReviewFileError(
                path,
                number,
                f"is a task without data.{ITEM_ID}.",
                "Import the tasks that `act-sklearn export --format label-studio` wrote.",
            )
        for annotation in task.get("annotations") or []:
            reviewer = str(annotation.get("completed_by", ""))
            choices = [
                choice
                for result in annotation.get("result") or []
                if result.get("from_name") == LABEL and result.get("type") == "choices"
                for choice in result.get("value", {}).get("choices", [])
            ]
            if annotation.get("was_cancelled") or not choices:
                continue  # skipped: the item stays pending
            if len(choices) > 1:
                raise ReviewFileError(
                    path,
                    number,
                    f"has an annotation of item {item_id!r} with {len(choices)} choices {choices}.",
                    'Use choice="single" in the labeling config (act-sklearn writes it).',
                )
            reviews.append(Review(str(item_id), choices[0], reviewer, str(path), number))
    return reviews


def is_label_studio_json(records):
    return bool(records) and all(isinstance(r, dict) and "annotations" in r for _, r in records[:5])
