"""The steps of a labelling job on a run folder: annotate, criticize, select (in rounds), export, import, train.

Each step holds the run folder's lock while it writes, reads what earlier steps
wrote through :class:`~.run_folder.RunFolder`'s typed accessors, checks everything
before it writes, and writes whole files atomically, so that a failed step leaves
the run folder as it was. When a step may be skipped, and what a new result makes
stale, is in :mod:`.run_folder`.
"""

import functools
import warnings
from pathlib import Path

import numpy as np

from .._llm_estimator import LLMBatchError, LLMFailure, fitted_component
from ..review import (
    collect_reviews,
    label_studio_tasks,
    labeling_config,
    read_reviews,
    write_label_studio_tasks,
    write_review_sheet,
)
from ..sampler import ACTSampler, FewExploredReviewsWarning, warn_if_few_explored_reviews
from ..stats.recalibration import recalibrate_error_proba
from ..stats.sampling import DEFAULT_EXPLORE, draw_round, resolve_budget, round_budgets, round_random_state
from .run_folder import MODEL, ORACLE_REVIEW, RunFolderError

EXPORT_FORMATS = ("csv", "jsonl", "label-studio")

# parameters that change how a component runs, never what it answers
RUN_ONLY_PARAMETERS = frozenset(
    {"progress", "on_error", "api_key_env", "timeout", "max_retries", "max_concurrency", "cache_path", "prices",
     "http_transport", "mode", "batch_poll_interval"}
)


def writes_run_folder(step):
    """Run ``step(run, ...)`` holding the run folder's lock."""

    @functools.wraps(step)
    def locked_step(run, *args, **kwargs):
        with run.locked():
            return step(run, *args, **kwargs)

    return locked_step


def component_config(component):
    """Everything about a component that can change its answers, as plain JSON.

    The class and every parameter (nested components and the backend's model and
    base URL included), but not how it runs (progress bars, concurrency, keys).
    """
    if hasattr(component, "get_params"):
        params = component.get_params(deep=False)
        config = {"class": f"{type(component).__module__}.{type(component).__qualname__}"}
        config.update(
            (name, component_config(value)) for name, value in sorted(params.items()) if name not in RUN_ONLY_PARAMETERS
        )
        return config
    if isinstance(component, dict):
        return {str(key): component_config(value) for key, value in component.items()}
    if isinstance(component, (list, tuple, np.ndarray)):
        return [component_config(value) for value in component]
    if isinstance(component, np.generic):
        return component.item()
    if component is None or isinstance(component, (str, int, float, bool)):
        return component
    return repr(component)


def describe(component):
    """Which model a component uses, for logs and the report: never its key, never the whole repr."""
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


@writes_run_folder
def annotate(run, annotator, *, force=False):
    """Label every item; writes ``machine.csv`` (labels and class probabilities).

    Skipped when ``annotate`` is current with the same configuration (unless
    ``force``). Every response is cached as it arrives
    (``LLMBackend(cache_path=...)``), so a failed or killed run, started again,
    pays only for the items left.

    Returns
    -------
    ran : bool
        False when the step was skipped.
    """
    config = component_config(annotator)
    if not force and _done(run, "annotate", config):
        return False
    annotator = fitted_component(annotator, run.classes())
    contents = run.contents()
    annotations = annotator.annotate(contents)
    failed = _failures(run, annotator, "annotate", annotations.failures)
    labels = ["" if bad else str(label) for bad, label in
              zip(annotations.failed, annotator.labels_from_index(annotations.label_index))]
    run.write_machine_labels(labels, annotations.proba, annotator.classes_)
    run.finish_step(
        "annotate", config=config, component=describe(annotator), usage=_usage(annotator), failed=failed
    )
    return True


def _done(run, step, config):
    """Current with the same configuration, and nothing left to retry."""
    return run.is_current(step, config) and not run.steps()[step].get("failed")


def _failures(run, component, stage, failures):
    """Record a step's items without a usable answer, or raise unless the component skips them."""
    if failures and getattr(component, "on_error", "raise") != "skip":
        raise LLMBatchError(f"{stage} requests", failures, len(run.item_ids()))
    ids = run.item_ids()
    run.write_failures(stage, {ids[f.index]: f.reason for f in failures})
    return len(failures)


@writes_run_folder
def criticize(run, criticizer, *, force=False):
    """Score every machine label; writes ``criticism.csv`` (error probabilities).

    Skipped when ``criticize`` is current with the same configuration (unless ``force``).

    Returns
    -------
    ran : bool
        False when the step was skipped.
    """
    run.require("annotate")
    config = component_config(criticizer)
    if not force and _done(run, "criticize", config):
        return False
    criticizer = fitted_component(criticizer, run.classes())
    contents, labels = run.contents(), run.machine_labels()
    labelled = np.flatnonzero(labels != "")  # an item with no label has nothing to criticise
    criticism = criticizer.criticize([contents[i] for i in labelled], labels[labelled])
    failures = [LLMFailure(int(labelled[f.index]), f.reason) for f in criticism.failures]
    failed = _failures(run, criticizer, "criticize", failures)
    error_proba = np.ones(labels.size)  # a failed item is the most suspicious there is
    error_proba[labelled] = np.nan_to_num(criticism.error_proba, nan=1.0)
    run.write_error_proba(error_proba)
    run.finish_step(
        "criticize", config=config, component=describe(criticizer), usage=_usage(criticizer), failed=failed
    )
    return True


@writes_run_folder
def select(run, *, budget, rule="threshold", explore=DEFAULT_EXPLORE, random_state=0, rounds=1):
    """Draw the review sample from the criticizer's error probabilities; writes ``selection.csv``.

    With ``rounds > 1`` this draws the first round, with its share of the
    budget (:func:`~act_sklearn.stats.sampling.round_budgets`); once its
    answers are in, :func:`select_next_round` draws the next.

    Once answers exist, the selection they were drawn under is final: the
    estimates weight each answer by the inclusion probability it had. Drawing
    the same selection again is harmless (in rounds: the same first round,
    and the later rounds are kept); any other is refused.
    """
    run.require("criticize")
    error_proba = run.error_proba()
    shares = round_budgets(resolve_budget(budget, error_proba.size), rounds)
    sampler = ACTSampler(budget=shares[0], rule=rule, explore=explore, random_state=random_state)
    warn_if_few_explored_reviews(explore, int(sum(shares)))  # for the whole budget, not the first round's share
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FewExploredReviewsWarning)
        sampler.fit(error_proba, must_review=_must_review(run))
    config = dict(budget=budget, rule=rule, explore=explore, random_state=random_state, rounds=rounds)
    if run.reviews():
        inclusion_proba, selected = run.selection()
        drawn_round, round_proba = run.selection_rounds()
        first = drawn_round == 1
        if drawn_round.max() > 1:  # later rounds drawn: the same first round keeps them
            same = run.steps()["select"]["config"] == config and np.array_equal(first, sampler.reviewed_)
            same = same and np.allclose(round_proba[first], sampler.inclusion_proba_[first])
        else:
            same = np.array_equal(selected, sampler.reviewed_) and np.allclose(inclusion_proba, sampler.inclusion_proba_)
        if not same:
            raise RunFolderError(
                f"{run.path} already holds answers to another selection (made with "
                f"{run.steps()['select']['config']}); a new one would change the design they were drawn under. "
                "Start a new --run folder to try other settings or another criticizer."
            )
        if drawn_round.max() > 1:
            return sampler
    run.write_selection(sampler.inclusion_proba_, sampler.reviewed_)
    run.finish_step("select", config=config, **config, n_selected=int(sampler.reviewed_.sum()), round=1,
                    round_budgets=[int(shares[0])])
    return sampler


@writes_run_folder
def select_next_round(run):
    """Draw the next round of a selection made with ``select(..., rounds=R)``; rewrites ``selection.csv``.

    Every item selected so far must have its answer. The criticizer is
    recalibrated on them (:func:`~act_sklearn.stats.recalibration.recalibrate_error_proba`,
    weighted by ``1 / pi`` of the round that drew each), and the round's share of
    the budget, with whatever earlier rounds left unspent, is drawn among the
    items without an answer, with the rule, exploration and seed of the first
    round. Answered items are never drawn again, and keep their answers; their
    ``inclusion_proba`` becomes 1 (certainty units of the new round's design,
    see :class:`~act_sklearn.ACTSampler`). It is the round that
    ``ACTSampler(rounds=R, random_state=seed)`` draws in one go with the same
    answers.

    Returns
    -------
    drawn : ndarray of bool, shape (n_samples,)
        The items the new round selected.
    """
    run.require("select")
    record = run.steps()["select"]
    config = record["config"]
    rounds, done = config.get("rounds", 1), record.get("round", 1)
    if rounds == 1:
        raise RunFolderError(
            f"{run.path}: this selection was drawn in one round, so it has no next round. To review in "
            "rounds, start a new --run folder and select with --rounds R (R rounds)."
        )
    if done >= rounds:
        raise RunFolderError(
            f"{run.path}: all {rounds} rounds of the selection are drawn; import their answers, then train "
            "or report."
        )
    ids = run.item_ids()
    _, selected = run.selection()
    drawn_round, round_proba = run.selection_rounds()
    answers = run.reviews()
    waiting = [item for item, chosen in zip(ids, selected) if chosen and item not in answers]
    if waiting:
        raise RunFolderError(
            f"{run.path}: {len(waiting)} of the {int(selected.sum())} items selected so far still wait for an "
            f"answer (the first: {waiting[0]!r}), and round {done + 1} is drawn from the criticizer recalibrated on "
            f"all their answers. Export them "
            f"with `act-sklearn export --run {run.path} --output FILE`, and bring the answers in with "
            f"`act-sklearn import --run {run.path} FILE` first."
        )
    error_proba, machine = run.error_proba(), run.machine_labels()
    shares = round_budgets(resolve_budget(config["budget"], len(ids)), rounds)
    left = len(ids) - int(selected.sum())
    budget = min(sum(shares[: done + 1]) - int(selected.sum()), left)  # unspent shares carry forward
    if budget < 1:
        raise RunFolderError(f"{run.path}: the budget is spent, or every item has an answer; train or report.")
    human = np.array([answers.get(item, label) for item, label in zip(ids, machine)], dtype=object)
    weights = np.divide(1.0, round_proba, out=np.zeros(len(ids)), where=selected)
    scores = recalibrate_error_proba(error_proba, machine, selected & (machine != human), selected, weights)
    number = done + 1
    state = round_random_state(config["random_state"], number, None)
    proba, drawn = draw_round(
        scores, budget, reviewed=selected, random_state=state, must_review=_must_review(run),
        rule=config["rule"], explore=config["explore"],
    )
    drawn_round = np.where(drawn, number, drawn_round)
    round_proba = np.where(selected, round_proba, proba)
    run.write_selection(np.where(selected, 1.0, proba), selected | drawn, rounds=drawn_round,
                        round_inclusion_proba=round_proba)
    run.finish_step("select", config=config, **config, n_selected=int((selected | drawn).sum()), round=number,
                    round_budgets=[*record.get("round_budgets", []), int(budget)])
    return drawn


def _must_review(run):
    """Items without a usable LLM answer: reviewed first, within the budget."""
    failed = set(run.failures())
    return np.array([item in failed for item in run.item_ids()], dtype=bool)


def review_rows(run, *, pending_only=True):
    """One row per selected item (most suspicious first): what a reviewer needs, and pi."""
    run.require("select")
    machine, error_proba = run.machine_labels(), run.error_proba()
    inclusion_proba, selected = run.selection()
    done = run.reviews() if pending_only else {}
    failures = run.failures()
    rows = []
    for index, item in enumerate(run.items()):
        if not selected[index] or item["item_id"] in done:
            continue
        row = {"item_id": item["item_id"]}
        row.update({key: item[key] for key in ("text", "image") if item.get(key) is not None})
        row.update(
            machine_label=machine[index],
            error_proba=float(error_proba[index]),
            inclusion_proba=float(inclusion_proba[index]),
        )
        if failures:
            stage, reason = failures.get(item["item_id"], ("", ""))
            row["llm_failure"] = f"{stage}: {reason}" if stage else ""
        rows.append(row)
    rows.sort(key=lambda row: (not row.get("llm_failure"), -row["error_proba"]))  # failed items first
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


@writes_run_folder
def import_reviews(run, path):
    """Take the answers in ``path`` (a sheet or a Label Studio export) into ``reviews.csv``.

    Nothing is written when the file has an error. Items still pending stay
    pending; conflicting answers are returned in ``conflicts`` and not taken.
    """
    run.require("select")
    chosen, known = run.selected_ids(), run.reviews()
    outcome = collect_reviews(read_reviews(path), selected_ids=chosen, classes=run.classes(), known=known)
    if outcome.taken:
        run.add_reviews(outcome.taken, source=Path(path).name)
    run.finish_step(
        "import",
        config=dict(source=str(path)),
        source=str(path),
        taken=len(outcome.taken),
        conflicts=len(outcome.conflicts),
        reviewed=len(known) + len(outcome.taken),
        selected=len(chosen),
    )
    return outcome


@writes_run_folder
def review_with_oracle(run):
    """Simulation: the gold labels answer every selected item still pending, through a review sheet.

    The answers travel the path people's answers take (``oracle_review.csv``,
    then :func:`import_reviews`), so a simulation checks that path too.
    """
    gold = run.gold()
    if gold is None:
        raise RunFolderError(f"{run.path}: the items have no gold labels; pass --label-column to simulate reviews.")
    truth = dict(zip(run.item_ids(), gold))
    rows = [{"item_id": row["item_id"], "label": truth[row["item_id"]]} for row in review_rows(run)]
    sheet = run.path / ORACLE_REVIEW
    write_review_sheet(sheet, rows)
    return import_reviews(run, sheet)


@writes_run_folder
def train(run, estimator=None, *, confidence=0.9, interval="score"):
    """Train on the machine labels corrected by the reviews so far (production mode); saves ``model.joblib``.

    Items selected but not yet reviewed count as not reviewed, which biases the
    loss only through the answers still missing; the manifest records how many.
    ``confidence`` and ``interval`` are those of the final-label accuracy, as in
    :func:`~act_sklearn.workflow.report`, with the same draw for ``"randomized"``.
    """
    import joblib

    from ..classifier import UNLABELED, ACTClassifier

    run.require("select")
    items = run.items()
    inputs, default_model = _training_inputs(run, items)
    inclusion_proba, selected = run.selection()
    reviews = run.reviews()
    if not reviews:
        raise RunFolderError(f"{run.path}: no human answers yet; import a review with `act-sklearn import` first.")
    y = np.array([reviews.get(item["item_id"], UNLABELED) for item in items], dtype=object)
    machine = run.machine_labels()
    # an item the annotator could not label: a reviewed one's machine term cancels at pi = 1 (its
    # answer stands in), an unreviewed one has no label to train on
    machine = np.where(machine == "", y, machine)
    keep = np.flatnonzero(machine != UNLABELED)
    inputs = [inputs[i] for i in keep] if isinstance(inputs, list) else inputs[keep]
    model = ACTClassifier(
        estimator if estimator is not None else default_model(),
        classes=run.classes(),
        confidence=confidence,
        interval=interval,
        random_state=run.interval_draw(),
    )
    model.fit(inputs, y[keep], machine_labels=machine[keep], inclusion_proba=inclusion_proba[keep])
    joblib.dump(model, run.path / MODEL)
    estimate = model.label_accuracy_
    run.finish_step(
        "train",
        config=component_config(model.estimator),
        n_human_labels=model.n_human_labels_,
        pending_reviews=int(selected.sum()) - len(reviews),
        label_accuracy=estimate.accuracy if estimate.estimable else None,
        label_accuracy_ci=[estimate.ci_low, estimate.ci_high] if estimate.estimable else None,
        label_accuracy_approximate=estimate.approximate,
        label_accuracy_interval=interval,
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
