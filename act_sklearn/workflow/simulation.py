"""Every step of a labelling job in one go, with the gold labels acting as the reviewers.

A step that is current with the same settings is not run again (the rules are in
:mod:`.run_folder`), so a simulation that was interrupted (or a killed command)
resumes where it stopped; LLM answers come from the response cache either way.
"""

import time

from ..stats.sampling import DEFAULT_EXPLORE
from .run_folder import MODEL
from .steps import annotate, criticize, describe, review_with_oracle, select, train, writes_run_folder


@writes_run_folder
def simulate(
    run, annotator, criticizer, *, budget, rule="threshold", explore=DEFAULT_EXPLORE, random_state=0,
    confidence=0.9, interval="score", log=print,
):
    """annotate -> criticize -> select -> review by the oracle -> train; then call :func:`report`.

    Parameters
    ----------
    run : RunFolder
        Created with gold labels (``oracle.csv``).
    annotator, criticizer : components
        LLM ones (:class:`MLLMAnnotator`, :class:`MLLMCriticizer`) or offline
        ones (:mod:`act_sklearn.offline`).
    budget, rule, explore, random_state
        As for :class:`ACTSampler`.
    confidence, interval
        Of the trained model's ``label_accuracy_``, as for :func:`train`.
    log : callable, default=print
        Receives one line per step.

    Returns
    -------
    model : ACTClassifier
        The trained downstream model (also in ``model.joblib``).
    """
    clock = _Clock()
    if annotate(run, annotator):
        log(f"annotate: {len(run.item_ids())} items labelled by {describe(annotator)} ({clock.lap()})")
    else:
        log(f"annotate: done earlier with the same settings ({describe(annotator)})")
    if criticize(run, criticizer):
        log(f"criticize: {len(run.item_ids())} labels scored by {describe(criticizer)} ({clock.lap()})")
    else:
        log(f"criticize: done earlier with the same settings ({describe(criticizer)})")
    sampler = select(run, budget=budget, rule=rule, explore=explore, random_state=random_state)
    log(f"select: {int(sampler.reviewed_.sum())} items for review (budget {budget}, {rule}, explore {explore})")
    outcome = review_with_oracle(run)
    log(f"review: the oracle answered {len(outcome.taken)} pending items")
    clock.lap()
    model = train(run, confidence=confidence, interval=interval)
    log(f"train: {model.n_human_labels_} human labels -> {run.path / MODEL} ({clock.lap()})")
    return model


class _Clock:
    """Seconds since the last lap, for the log (model loading included)."""

    def __init__(self):
        self.last = time.monotonic()

    def lap(self):
        now = time.monotonic()
        elapsed, self.last = now - self.last, now
        return f"{elapsed:.0f} s"
