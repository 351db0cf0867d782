"""The steps of a labelling job on a run folder: annotate, criticize, select, export, import, train.

Each step reads what earlier steps wrote, checks everything before it writes, and
writes whole files atomically, so that a failed step leaves the run folder as it was.
"""

from pathlib import Path

import numpy as np

from .review import (
    collect_reviews,
    label_studio_tasks,
    labeling_config,
    read_reviews,
    write_label_studio_tasks,
    write_review_sheet,
)
from .run_folder import RunFolderError
from .sampler import ACTSampler

EXPORT_FORMATS = ("csv", "jsonl", "label-studio")


def select(run, *, budget, rule="threshold", explore=0.1, random_state=0):
    """Draw the review sample from the criticizer's error probabilities; writes ``selection.csv``.

    Once answers exist, the selection they were drawn under is final: the
    estimates weight each answer by the inclusion probability it had. Drawing
    the same selection again is harmless; any other is refused.
    """
    run.require("annotate", "criticize")
    criticism = run.read_table("criticism.csv")
    if criticism["item_id"] != run.item_ids():
        raise RunFolderError(f"{run.path}: criticism.csv does not cover the items; run `act-sklearn criticize` again.")
    error_proba = np.asarray(criticism["error_proba"], dtype=float)
    sampler = ACTSampler(budget=budget, rule=rule, explore=explore, random_state=random_state).fit(error_proba)
    table = {
        "item_id": criticism["item_id"],
        "inclusion_proba": [repr(float(p)) for p in sampler.inclusion_proba_],
        "selected": [str(int(s)) for s in sampler.reviewed_],
    }
    if run.reviews() and table != run.read_table("selection.csv"):
        raise RunFolderError(
            f"{run.path} already holds answers to another selection (made with {run.manifest()['steps']['select']}); "
            "a new one would change the design they were drawn under. Start a new --run folder to try other "
            "settings or another criticizer."
        )
    run.write_table("selection.csv", table)
    chosen = dict(budget=budget, rule=rule, explore=explore, random_state=random_state)
    run.finish_step("select", **chosen, n_selected=int(sampler.reviewed_.sum()))
    return sampler


def selected_ids(run):
    table = run.read_table("selection.csv")
    return [item for item, chosen in zip(table["item_id"], table["selected"]) if chosen == "1"]


def review_rows(run, *, pending_only=True):
    """One row per selected item (most suspicious first): what a reviewer needs, and pi."""
    run.require("select")
    machine = run.read_table("machine.csv")
    criticism = run.read_table("criticism.csv")
    selection = run.read_table("selection.csv")
    done = run.reviews() if pending_only else {}
    rows = []
    for index, item in enumerate(run.items()):
        if selection["selected"][index] != "1" or item["item_id"] in done:
            continue
        row = {"item_id": item["item_id"]}
        row.update({key: item[key] for key in ("text", "image") if item.get(key) is not None})
        row.update(
            machine_label=machine["machine_label"][index],
            error_proba=float(criticism["error_proba"][index]),
            inclusion_proba=float(selection["inclusion_proba"][index]),
        )
        rows.append(row)
    rows.sort(key=lambda row: -row["error_proba"])
    return rows


def export(run, path, *, format="csv", image_mode="data-url", document_root=None):
    """Write the items still awaiting review to ``path``; Label Studio also gets its labeling config.

    Returns the number of items exported.
    """
    if format not in EXPORT_FORMATS:
        raise ValueError(f"format must be one of {EXPORT_FORMATS}; got {format!r}.")
    rows = review_rows(run)
    path = Path(path)
    if format == "label-studio":
        kind = "image" if rows and "image" in rows[0] else "text"
        tasks = label_studio_tasks(rows, kind=kind, image_mode=image_mode, document_root=document_root)
        write_label_studio_tasks(path, tasks)
        config = path.with_name(path.stem + ".config.xml")
        config.write_text(labeling_config(run.classes(), kind=kind), encoding="utf-8")
    else:
        write_review_sheet(path.with_suffix(f".{format}"), rows)
    return len(rows)


def import_reviews(run, path):
    """Take the answers in ``path`` (a sheet or a Label Studio export) into ``reviews.csv``.

    Nothing is written when the file has an error. Items still pending stay
    pending; conflicting answers are returned in ``conflicts`` and not taken.
    """
    run.require("select")
    chosen, known = selected_ids(run), run.reviews()
    outcome = collect_reviews(read_reviews(path), selected_ids=chosen, classes=run.classes(), known=known)
    if outcome.taken:
        run.add_reviews(outcome.taken, source=Path(path).name)
    run.finish_step(
        "import",
        source=str(path),
        taken=len(outcome.taken),
        conflicts=len(outcome.conflicts),
        reviewed=len(known) + len(outcome.taken),
        selected=len(chosen),
    )
    return outcome


def review_with_oracle(run):
    """Simulation: the gold labels answer every selected item still pending, through a review sheet.

    The answers travel the path people's answers take (``oracle_review.csv``,
    then :func:`import_reviews`), so a simulation checks that path too.
    """
    gold = run.read_table("oracle.csv").get("gold")
    if not gold:
        raise RunFolderError(f"{run.path}: the items have no gold labels; pass --label-column to simulate reviews.")
    truth = dict(zip(run.item_ids(), gold))
    rows = [{"item_id": row["item_id"], "label": truth[row["item_id"]]} for row in review_rows(run)]
    sheet = run.path / "oracle_review.csv"
    write_review_sheet(sheet, rows)
    return import_reviews(run, sheet)


def train(run, estimator=None):
    """Train on the machine labels corrected by the reviews so far (production mode); saves ``model.joblib``.

    Items selected but not yet reviewed count as not reviewed, which biases the
    loss only through the answers still missing; the manifest records how many.
    """
    import joblib

    from .classifier import UNLABELED, ACTClassifier

    run.require("select")
    items = run.items()
    inputs, default_model = _training_inputs(run, items)
    machine = run.read_table("machine.csv")["machine_label"]
    inclusion_proba = np.asarray(run.read_table("selection.csv")["inclusion_proba"], dtype=float)
    reviews = run.reviews()
    if not reviews:
        raise RunFolderError(f"{run.path}: no human answers yet; import a review with `act-sklearn import` first.")
    y = np.array([reviews.get(item["item_id"], UNLABELED) for item in items], dtype=object)
    model = ACTClassifier(estimator if estimator is not None else default_model(), classes=run.classes())
    model.fit(inputs, y, machine_labels=np.array(machine, dtype=object), inclusion_proba=inclusion_proba)
    joblib.dump(model, run.path / "model.joblib")
    estimate = model.label_accuracy_
    run.finish_step(
        "train",
        n_human_labels=model.n_human_labels_,
        pending_reviews=len(selected_ids(run)) - len(reviews),
        label_accuracy=estimate.accuracy if estimate.estimable else None,
        label_accuracy_ci=[estimate.ci_low, estimate.ci_high] if estimate.estimable else None,
    )
    return model


def _training_inputs(run, items):
    """What the default downstream model reads: the texts if every item has one, else the image files."""
    from .default_models import default_image_model, default_text_model

    if all(item.get("text") is not None for item in items):
        return [item["text"] for item in items], default_text_model
    if all(item.get("image") is not None for item in items):
        return np.array([item["image"] for item in items], dtype=object).reshape(-1, 1), default_image_model
    raise RunFolderError(
        f"{run.path}: the default downstream models need a text for every item or an image for every item, "
        "and these items have neither throughout. Train in Python: act_sklearn.workflow.train(run, estimator)."
    )


def _contents(items):
    """What the LLMs read per item: the text, the image path, or both as a multimodal row."""
    if all(item.get("image") is None for item in items):
        return [item["text"] for item in items]
    if all(item.get("text") is None for item in items):
        return [item["image"] for item in items]
    return [{"text": item["text"] or "", "image": item["image"]} for item in items]


def describe(component):
    """Which model a component uses, for the manifest: never its key, never the whole repr."""
    backend = getattr(component, "backend", None)
    model = getattr(backend, "model", None) or getattr(component, "encoder", None)
    return f"{type(component).__name__}({model})" if model else type(component).__name__


def _usage(component):
    """The LLM ledger of a component, with its estimated cost; None for offline models."""
    usage = getattr(component, "usage_", None)
    if usage is None:
        return None
    facts = {name: getattr(usage, name) for name in usage.__dataclass_fields__}
    facts["cost_usd"] = component.usage_cost()
    return facts


def annotate(run, annotator):
    """Label every item; writes ``machine.csv`` (labels and class probabilities).

    Every response is cached as it arrives (``LLMBackend(cache_path=...)``), so a
    failed or killed run, started again, pays only for the items left.
    """
    from ._llm_estimator import LLMBatchError, fitted_component

    annotator = fitted_component(annotator, run.classes())
    items = run.items()
    annotations = annotator.annotate(_contents(items))
    if annotations.failures:
        raise LLMBatchError("annotate requests", annotations.failures, len(items))
    labels = annotator.labels_from_index(annotations.label_index)
    table = {"item_id": [item["item_id"] for item in items], "machine_label": [str(label) for label in labels]}
    for k, name in enumerate(annotator.classes_):
        table[f"proba:{name}"] = [repr(float(p)) for p in annotations.proba[:, k]]
    run.write_table("machine.csv", table)
    run.finish_step("annotate", component=describe(annotator), usage=_usage(annotator))
    return labels


def criticize(run, criticizer):
    """Score every machine label; writes ``criticism.csv`` (error probabilities)."""
    from ._llm_estimator import LLMBatchError, fitted_component

    run.require("annotate")
    criticizer = fitted_component(criticizer, run.classes())
    items = run.items()
    labels = np.array(run.read_table("machine.csv")["machine_label"], dtype=object)
    criticism = criticizer.criticize(_contents(items), labels)
    if criticism.failures:
        raise LLMBatchError("criticize requests", criticism.failures, len(items))
    run.write_table(
        "criticism.csv",
        {"item_id": [item["item_id"] for item in items], "error_proba": [repr(float(e)) for e in criticism.error_proba]},
    )
    run.finish_step("criticize", component=describe(criticizer), usage=_usage(criticizer))
    return criticism.error_proba
