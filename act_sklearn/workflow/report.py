"""The run report: what a labelling job achieved, what it cost, and two plots.

Writes ``report.json`` (every figure), ``report.md`` (for people) and PNG plots
into the run folder. Figures that need the truth (machine accuracy, AUROC, the
AQG curve) appear only when the run has an oracle column; the final-label
accuracy estimate and the calibration on reviewed items never need one.
"""

import json

import numpy as np

from .._atomic import write_atomically
from .run_folder import REPORT_JSON, REPORT_MD
from .steps import writes_run_folder

AQG_BUDGETS = (0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5)  # shares of the items
LLM_STEPS = ("annotate", "criticize")


@writes_run_folder
def report(run, *, confidence=0.9, interval="score"):
    """Write ``report.json``, ``report.md``, ``calibration.png`` (and ``aqg.png`` with an oracle).

    Selected items still awaiting an answer are treated as unreviewed, so the
    estimate covers the answers in hand; ``pending_reviews`` says how many are missing.
    In rounds, the answers of earlier rounds count as certain (``inclusion_proba``
    1 in ``selection.csv``) and the latest round's design carries the estimate.

    Parameters
    ----------
    run : RunFolder
    confidence : float, default=0.9
        Level of the final-label accuracy interval.
    interval : {"score", "randomized"}, default="score"
        The interval (:func:`~act_sklearn.stats.estimate_label_accuracy`;
        ``"randomized"`` is opt-in). Its draw is fixed by ``selection.csv``,
        before any answer is in: the report gives the same interval each time,
        and the draw cannot be made again after the reviews are seen.

    Returns
    -------
    facts : dict
        What ``report.json`` holds.
    """
    from ..stats import estimate_label_accuracy

    run.require("select")
    ids = run.item_ids()
    machine, error_proba = run.machine_labels(), run.error_proba()
    inclusion_proba, selected = run.selection()
    answers = run.reviews()
    reviewed = np.array([item in answers for item in ids])
    human = np.array([answers.get(item, label) for item, label in zip(ids, machine)], dtype=object)
    estimate = estimate_label_accuracy(
        machine,
        human,
        reviewed,
        inclusion_proba,
        confidence=confidence,
        interval=interval,
        random_state=run.interval_draw(),
    )
    steps = run.steps()
    n_selected = int(selected.sum())
    usage = {step: steps[step].get("usage") for step in LLM_STEPS if step in steps}
    costs = [u["cost_usd"] for u in usage.values() if u and u.get("cost_usd") is not None]
    facts = dict(
        n_items=len(ids),
        selected=n_selected,
        budget=steps["select"]["budget"],
        rule=steps["select"]["rule"],
        explore=steps["select"]["explore"],
        review_round=steps["select"].get("round", 1),  # reviews in rounds: the latest drawn, of how many
        review_rounds=steps["select"].get("rounds", 1),
        human_labels=int(reviewed.sum()),
        pending_reviews=n_selected - int(reviewed.sum()),
        errors_found=int(np.sum(reviewed & (human != machine))),
        final_label_accuracy=estimate.accuracy if estimate.estimable else None,
        final_label_accuracy_ci=[estimate.ci_low, estimate.ci_high] if estimate.estimable else None,
        final_label_accuracy_approximate=estimate.approximate,  # its level holds only roughly
        llm_failures=len(run.failures()),
        confidence=confidence,
        interval=interval,
        models={step: steps[step].get("component") for step in LLM_STEPS if step in steps},
        llm_usage=usage,
        llm_cost_usd=sum(costs) if costs else None,
    )
    gold = run.gold()
    if gold is not None:
        facts.update(_oracle_facts(run, gold, machine, human, reviewed, error_proba, facts))
    else:
        facts.update(_review_calibration(run, machine, human, reviewed, error_proba, inclusion_proba))
    if run.is_current("evaluate"):  # held-out accuracies of downstream models (the demo's comparison)
        facts["downstream_test_accuracy"] = steps["evaluate"]["downstream_test_accuracy"]
    write_atomically(run.path / REPORT_JSON, lambda f: json.dump(facts, f, indent=2))
    write_atomically(run.path / REPORT_MD, lambda f: f.write(_markdown(run, estimate, facts)))
    return facts


def _oracle_facts(run, gold, machine, human, reviewed, error_proba, facts):
    """A simulation: the truth gives accuracies, the criticizer's AUROC, and AQG curves over budgets."""
    from .plots import plot_aqg_curve, plot_calibration
    from ..stats import aqg_curve, criticizer_auroc

    is_error = machine != gold
    rule = dict(rule=facts["rule"], explore=facts["explore"])
    budgets = [b for b in AQG_BUDGETS if b * gold.size >= 1]  # at least one review
    curves = {
        f"criticizer ({facts['rule']}, explore {facts['explore']})": aqg_curve(
            gold, machine, error_proba, budgets, random_state=0, **rule
        ),
        "random review": aqg_curve(gold, machine, np.full(gold.size, 0.5), budgets, rule="normalize", random_state=0),
    }
    plot_aqg_curve(run.path / "aqg.png", curves, n_items=gold.size, run_budget=facts["human_labels"])
    ece = plot_calibration(
        run.path / "calibration.png", error_proba, is_error, title="Criticizer calibration (all items)"
    )
    return dict(
        machine_accuracy=float(np.mean(~is_error)),
        final_label_accuracy_true=float(np.mean(np.where(reviewed, human, machine) == gold)),
        criticizer_auroc=float(criticizer_auroc(gold, machine, error_proba)),
        criticizer_ece=ece,
        aqg_curves={
            name: {"budget": budgets, **{key: values.tolist() for key, values in curve.items()}}
            for name, curve in curves.items()
        },
        plots=["aqg.png", "calibration.png"],
    )


def _review_calibration(run, machine, human, reviewed, error_proba, inclusion_proba):
    """Production: calibration on the reviewed items, weighted by 1/pi to speak for all items.

    Items that could never be reviewed (pi = 0, explore = 0) are not represented.
    """
    from .plots import plot_calibration

    if not reviewed.any():
        return dict(plots=[])
    ece = plot_calibration(
        run.path / "calibration.png",
        error_proba[reviewed],
        machine[reviewed] != human[reviewed],
        weights=1.0 / inclusion_proba[reviewed],
        title="Criticizer calibration (reviewed items, weighted 1/pi)",
    )
    return dict(criticizer_ece_reviewed=ece, plots=["calibration.png"])


def _markdown(run, estimate, facts):
    lines = [f"# act-sklearn report: {run.path.name}", "", str(estimate), "", "| figure | value |", "|---|---|"]
    for name, value in facts.items():
        if name in ("aqg_curves", "plots", "llm_usage"):
            continue
        lines.append(f"| {name.replace('_', ' ')} | {_format(value)} |")
    for step, usage in facts["llm_usage"].items():
        if usage:
            lines.append(
                f"| {step}: LLM requests / cache hits / tokens in / tokens out | {usage['requests']} / "
                f"{usage['cache_hits']} / {usage['prompt_tokens']} / {usage['completion_tokens']} |"
            )
            if usage.get("batch_requests"):
                lines.append(
                    f"| {step}: Batch API requests / tokens in / tokens out | {usage['batch_requests']} / "
                    f"{usage.get('batch_prompt_tokens', 0)} / {usage.get('batch_completion_tokens', 0)} |"
                )
    lines.append("")
    lines += [f"![{name}]({name})" for name in facts["plots"]]
    return "\n".join(lines) + "\n"


def _format(value):
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list) and all(isinstance(v, float) for v in value):
        return " to ".join(f"{v:.4g}" for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_format(v)}" for k, v in value.items())
    return "n/a" if value is None else str(value)
