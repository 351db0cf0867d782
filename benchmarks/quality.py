"""Quality benchmark of the ACT core on real data, a real weak annotator and a real criticizer.

Run it with::

    python benchmarks/quality.py                 # full run: 6.5 min on 2 idle cores
    python benchmarks/quality.py --quick         # 5000-item pool, one seed, ~20 s
    python benchmarks/quality.py --output quality.md

Protocol (shared with ``examples/act_fashion_mnist.py``, whose ``build_act_task``
this script imports):

* **Data**: Fashion-MNIST (official train split for the seed sets and the pool:
  all 59,000 train images outside the seed sets, ``--pool-size`` for fewer; the
  official 10,000-image test split for the downstream accuracy) and
  scikit-learn's digits (a random 400-item test split, the rest for seeds and pool).
* **Annotator**: a logistic regression on raw pixels trained on a small,
  class-balanced human seed set; its predictions on the pool are the machine
  labels. No synthetic label flipping anywhere.
* **Criticizer**: a random forest (another model family) trained on a second,
  disjoint seed set; ``ClassifierCriticizer`` gives
  ``error_proba = 1 - P_forest(machine label | x)``.
* **Downstream**: ``ACTLogisticRegression`` on standardized features (50 PCA
  components fitted on the pool without labels for Fashion-MNIST, the 64 pixels
  for digits), trained by ``ACTClassifier`` in simulation mode: the gold labels
  act as the reviewers and are read only where sampled.
* **Methods**: each sampling rule (threshold, normalize, sigmoid) with
  ``explore=0`` and ``explore=0.1``; "random" reviews a uniform random sample (no
  criticizer: ``ACTClassifier`` without ``error_proba``). References: training on
  all gold labels (full human) and on the machine labels alone (full machine).
  For every run the same downstream model is also refitted, unweighted, on the
  run's final labels (human where reviewed, machine elsewhere), which separates
  what the review sample buys from what the ACT loss weighting does with it.
"""

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from joblib import Parallel, delayed
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import Bunch

from act_sklearn import ACTClassifier, ACTSampler
from act_sklearn.stats import (
    act_weights,
    annotation_quality_gain,
    budget_efficiency,
    criticizer_auroc,
    expected_calibration_error,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
from act_fashion_mnist import (  # noqa: E402  (shared set-up, see the module docstring)
    DOWNSTREAM_C,
    DOWNSTREAM_MAX_ITER,
    FASHION_MNIST_SETUP,
    build_act_task,
    downstream_model,
    fashion_mnist_task,
)

BUDGETS = (0.05, 0.10, 0.15, 0.20, 0.30, 0.40)  # plus the annotator's error rate
RULES = ("threshold", "normalize", "sigmoid")
EXPLORE = 0.1  # explore > 0 variant of every rule
CLIP = 1.0  # bound on negative ACT target weights in the clipped column
SENSITIVITY_EXPLORE = 0.2  # extra runs at the error-rate budget
SEEDS = (0, 1, 2)  # seeds of the review draw
DATA_SEED = 0  # seed of the splits, seed sets and models
DIGITS_SETUP = dict(annotator_per_class=3, critic_per_class=5, annotator_C=1.0)
DIGITS_TEST_SIZE = 400
CONFIDENCE = 0.9


# -- one run --------------------------------------------------------------------


def _run(task, budget, rule, explore, seed):
    """One ACT fit; ``rule=None`` is random review (no criticizer)."""
    y_pool, machine = task.y_pool, task.machine_labels
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        sampler = ACTSampler(
            budget=budget, rule=rule or "threshold", explore=explore, random_state=seed
        )
        act = ACTClassifier(downstream_model(), sampler=sampler, confidence=CONFIDENCE)
        error_proba = None if rule is None else task.error_proba
        act.fit(task.X_pool, y_pool, machine_labels=machine, error_proba=error_proba)
        test_accuracy = act.score(task.X_test, task.y_test)
        pi = act.inclusion_proba_
        if np.all((pi == 0) | (pi == 1)):
            refit_accuracy = clip_accuracy = test_accuracy  # the ACT loss is plain training here
        else:
            refit = downstream_model().fit(task.X_pool, act.final_labels_)
            refit_accuracy = refit.score(task.X_test, task.y_test)
            # The same review sample, the ACT loss with its negative weights clipped at -CLIP.
            clipped = downstream_model().set_params(clip=CLIP).fit(
                task.X_pool,
                np.where(act.reviewed_, y_pool, -1),
                machine_labels=machine,
                act_weight=act_weights(act.reviewed_, pi),
            )
            clip_accuracy = clipped.score(task.X_test, task.y_test)
    estimate = act.label_accuracy_
    true_accuracy = float(np.mean(act.final_labels_ == y_pool))
    reviewed = act.reviewed_
    return dict(
        budget=budget,
        rule=rule,
        explore=explore,
        seed=seed,
        n_human=act.n_human_labels_,
        final_accuracy=true_accuracy,
        estimate=estimate,
        covered=estimate.estimable and estimate.ci_low <= true_accuracy <= estimate.ci_high,
        aqg=annotation_quality_gain(y_pool, machine, reviewed),
        efficiency=budget_efficiency(y_pool, machine, reviewed),
        max_weight=float(np.max(1.0 / pi[reviewed])) if reviewed.any() else 0.0,
        test_accuracy=test_accuracy,
        refit_accuracy=refit_accuracy,
        clip_accuracy=clip_accuracy,
        n_convergence_warnings=sum(issubclass(w.category, ConvergenceWarning) for w in caught),
        seconds=time.perf_counter() - start,
    )


# -- one data set -----------------------------------------------------------------


def _method_name(rule, explore):
    return "random (no critic)" if rule is None else f"{rule}, explore={explore:g}"


def evaluate(name, task, seeds, n_jobs, *, data_note=""):
    """All budgets and methods on one task; returns a dict of results."""
    y_pool, machine, error_proba = task.y_pool, task.machine_labels, task.error_proba
    machine_accuracy = float(np.mean(machine == y_pool))
    error_budget = round(1 - machine_accuracy, 2)
    budgets = sorted(set(BUDGETS) | {error_budget})
    methods = [(None, 0.0)] + [(rule, explore) for rule in RULES for explore in (0.0, EXPLORE)]
    sensitivity = [(rule, SENSITIVITY_EXPLORE) for rule in RULES]

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        human = downstream_model().fit(task.X_pool, y_pool).score(task.X_test, task.y_test)
        machine_only = downstream_model().fit(task.X_pool, machine).score(task.X_test, task.y_test)
    reference_warnings = len(caught)

    arrays = Bunch(  # only what the workers need (no fitted annotator or criticizer)
        **{key: task[key] for key in ("X_pool", "y_pool", "machine_labels", "error_proba")},
        X_test=task.X_test,
        y_test=task.y_test,
    )
    jobs = [(b, rule, ex, s) for b in budgets for rule, ex in methods for s in seeds]
    jobs += [(error_budget, rule, ex, s) for rule, ex in sensitivity for s in seeds]
    runs = Parallel(n_jobs=n_jobs)(delayed(_run)(arrays, *job) for job in jobs)
    return dict(
        name=name,
        data_note=data_note,
        n_pool=y_pool.size,
        n_test=task.y_test.size,
        n_features=task.X_pool.shape[1],
        n_annotator_seed=task.n_annotator_seed,
        n_critic_seed=task.n_critic_seed,
        machine_accuracy=machine_accuracy,
        critic_accuracy=float(task.critic_accuracy),
        auroc=criticizer_auroc(y_pool, machine, error_proba),
        ece=expected_calibration_error(y_pool, machine, error_proba),
        mean_error_proba=float(np.mean(error_proba)),
        error_budget=error_budget,
        budgets=budgets,
        methods=methods,
        sensitivity=sensitivity,
        human=human,
        machine=machine_only,
        runs=runs,
        n_convergence_warnings=reference_warnings + sum(r["n_convergence_warnings"] for r in runs),
        fit_seconds=sum(r["seconds"] for r in runs),
    )


def _select(result, budget, rule, explore):
    return [
        r
        for r in result["runs"]
        if r["budget"] == budget and r["rule"] == rule and r["explore"] == explore
    ]


def _summary(runs):
    test = np.array([r["test_accuracy"] for r in runs])
    first = runs[0]["estimate"]
    return dict(
        n_human=np.mean([r["n_human"] for r in runs]),
        final=np.mean([r["final_accuracy"] for r in runs]),
        estimate=(
            f"{first.accuracy:.2%} [{first.ci_low:.2%}, {first.ci_high:.2%}]"
            if first.estimable
            else "n/a (some π = 0)"
        ),
        covered=(
            f"{sum(r['covered'] for r in runs)}/{len(runs)}" if first.estimable else "-"
        ),
        aqg=np.mean([r["aqg"] for r in runs]),
        efficiency=np.mean([r["efficiency"] for r in runs]),
        max_weight=max(r["max_weight"] for r in runs),
        test_mean=float(test.mean()),
        test_std=float(test.std()),
        test_min=float(test.min()),
        refit_mean=float(np.mean([r["refit_accuracy"] for r in runs])),
        clip_mean=float(np.mean([r["clip_accuracy"] for r in runs])),
        clip_min=float(np.min([r["clip_accuracy"] for r in runs])),
    )


# -- report -----------------------------------------------------------------------

_HEADER = (
    "| budget | method | human labels | final-label acc (true) | estimate "
    f"[{CONFIDENCE:.0%} CI], seed {{seed}} | CI covers truth | AQG | budget eff. | max 1/π "
    "| test acc, ACT (mean ± std) | test acc, ACT clip=1 | test acc, unweighted refit |\n"
    "|---|---|---:|---:|---:|:---:|---:|---:|---:|---:|---:|---:|"
)


def _row(budget_label, method, s):
    return (
        f"| {budget_label} | {method} | {s['n_human']:.0f} | {s['final']:.2%} | "
        f"{s['estimate']} | {s['covered']} | {s['aqg']:+.2%} | {s['efficiency']:.2f} | "
        f"{s['max_weight']:.3g} | {s['test_mean']:.2%} ± {s['test_std']:.2%} | "
        f"{s['clip_mean']:.2%} | {s['refit_mean']:.2%} |"
    )


def dataset_report(result, seeds):
    r = result
    lines = [
        f"## {r['name']}",
        "",
        f"- pool: {r['n_pool']} items, test: {r['n_test']} items; {r['data_note']}",
        f"- annotator: logistic regression on {r['n_annotator_seed']} human seed labels; "
        f"machine-label accuracy on the pool **{r['machine_accuracy']:.2%}** "
        f"(error rate {1 - r['machine_accuracy']:.2%})",
        f"- criticizer: random forest on {r['n_critic_seed']} other human seed labels "
        f"(its own accuracy {r['critic_accuracy']:.2%}); error_proba = 1 - P(machine label): "
        f"AUROC **{r['auroc']:.3f}**, ECE {r['ece']:.3f} (mean error_proba "
        f"{r['mean_error_proba']:.3f} vs true error rate {1 - r['machine_accuracy']:.3f})",
        f"- references (downstream test accuracy): full human **{r['human']:.2%}**, "
        f"full machine **{r['machine']:.2%}**",
        f"- review draws: seeds {list(seeds)}; budget marked * = the annotator's error "
        f"rate ({r['error_budget']:.0%})",
        "",
        _HEADER.format(seed=seeds[0]),
    ]
    for budget in r["budgets"]:
        label = f"{budget:.0%}" + ("*" if budget == r["error_budget"] else "")
        for rule, explore in r["methods"]:
            summary = _summary(_select(r, budget, rule, explore))
            lines.append(_row(label, _method_name(rule, explore), summary))
    lines += [
        "",
        f"Explore sensitivity at the error-rate budget ({r['error_budget']:.0%}):",
        "",
        _HEADER.format(seed=seeds[0]),
    ]
    for rule, explore in [(rl, ex) for rl in RULES for ex in (0.0, EXPLORE, SENSITIVITY_EXPLORE)]:
        summary = _summary(_select(r, r["error_budget"], rule, explore))
        lines.append(_row(f"{r['error_budget']:.0%}*", _method_name(rule, explore), summary))
    estimable = [run for run in r["runs"] if run["estimate"].estimable]
    explored = [run for run in estimable if run["explore"] > 0]
    lines += [
        "",
        f"Interval coverage ({CONFIDENCE:.0%} nominal): the true final-label accuracy lies in "
        f"label_accuracy_'s interval in {sum(run['covered'] for run in explored)} of "
        f"{len(explored)} runs with explore > 0 and in "
        f"{sum(run['covered'] for run in estimable)} of {len(estimable)} estimable runs in all.",
    ]
    lines += [
        "",
        f"Downstream fits: {len(r['runs'])} ACT fits in {r['fit_seconds']:.0f} s of worker "
        f"time; L-BFGS convergence warnings (max_iter={DOWNSTREAM_MAX_ITER}): "
        f"{r['n_convergence_warnings']}.",
        "",
    ]
    return lines


def targets_report(results):
    fashion = next((r for r in results if r["name"].startswith("Fashion")), None)
    lines = ["## Targets", ""]
    if fashion is not None:
        budget = fashion["error_budget"]
        gaps = []
        for rule in RULES:
            for explore in (0.0, EXPLORE):
                summary = _summary(_select(fashion, budget, rule, explore))
                gaps.append((fashion["human"] - summary["test_mean"], rule, explore))
        best_gap, best_rule, best_explore = min(gaps)
        verdict = "MET" if best_gap <= 0.01 else "NOT MET"
        lines.append(
            f"(a) Fashion-MNIST, budget = annotator error rate ({budget:.0%}): best ACT "
            f"configuration is {_method_name(best_rule, best_explore)} at "
            f"{fashion['human'] - best_gap:.2%} vs full human {fashion['human']:.2%}: gap "
            f"{100 * best_gap:.2f} points (target <= 1.00; ACT paper 3.28) -> **{verdict}**."
        )
        lines.append(
            "    Gaps of every configuration (points): "
            + ", ".join(f"{_method_name(rule, ex)}: {100 * g:.2f}" for g, rule, ex in gaps)
            + "."
        )
        explore_gaps = [g for g, _, ex in gaps if ex > 0]
        lines.append(
            f"    With explore={EXPLORE:g} (the configurations that give a confidence "
            f"interval) the smallest gap is {100 * min(explore_gaps):.2f} points."
        )
        lines.append("")
    for r in results:
        failures = []
        for budget in r["budgets"]:
            for rule, explore in r["methods"]:
                if rule is None or explore == 0:
                    continue
                summary = _summary(_select(r, budget, rule, explore))
                if summary["test_mean"] < r["machine"]:
                    failures.append((budget, rule, explore, summary))
        n_checked = len(r["budgets"]) * len(RULES)
        verdict = "MET" if not failures else "NOT MET"
        lines.append(
            f"(b) {r['name']}: rules with explore={EXPLORE:g} below full-machine training "
            f"({r['machine']:.2%}) in mean test accuracy: {len(failures)} of {n_checked} "
            f"(rule, budget) pairs -> **{verdict}**."
        )
        for budget, rule, explore, s in failures:
            lines.append(
                f"    - {budget:.0%}, {_method_name(rule, explore)}: {s['test_mean']:.2%} "
                f"(worst seed {s['test_min']:.2%}); unweighted refit on the same final "
                f"labels {s['refit_mean']:.2%}"
            )
        clipped_failures = [
            (budget, rule, s)
            for budget in r["budgets"]
            for rule, explore in r["methods"]
            if rule is not None and explore > 0
            for s in [_summary(_select(r, budget, rule, explore))]
            if s["clip_min"] < r["machine"]
        ]
        verdict = "MET" if not clipped_failures else "NOT MET"
        lines.append(
            f"(b, clip={CLIP:g}) {r['name']}: the same runs with the negative ACT weights "
            f"clipped at -{CLIP:g}: {len(clipped_failures)} of {n_checked} (rule, budget) pairs "
            f"have a seed below full-machine training -> **{verdict}**."
        )
        for budget, rule, s in clipped_failures:
            lines.append(
                f"    - {budget:.0%}, {_method_name(rule, EXPLORE)}: worst seed {s['clip_min']:.2%}"
            )
    lines.append("")
    return lines


# -- data sets -------------------------------------------------------------------


def fashion_mnist(pool_size):
    return fashion_mnist_task(random_state=DATA_SEED, pool_size=pool_size)


def digits():
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    order = np.random.default_rng(DATA_SEED).permutation(y.size)
    test, train = order[:DIGITS_TEST_SIZE], order[DIGITS_TEST_SIZE:]
    return build_act_task(
        X[train], y[train], X[test], y[test], random_state=DATA_SEED, **DIGITS_SETUP
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="pool of 5000 items, one seed")
    parser.add_argument("--output", metavar="FILE.md", help="also write the report here")
    parser.add_argument("--n-jobs", type=int, default=2, help="parallel fits (default 2)")
    parser.add_argument(
        "--pool-size",
        type=int,
        default=None,
        help="Fashion-MNIST pool size (default: all train items outside the seed sets, "
        "59000; 5000 with --quick)",
    )
    args = parser.parse_args(argv)
    command = "python benchmarks/quality.py" + "".join(
        f" {a}" for a in (argv if argv is not None else sys.argv[1:])
    )
    start = time.perf_counter()
    seeds = SEEDS[:1] if args.quick else SEEDS
    pool_size = args.pool_size or (5000 if args.quick else None)

    results = [
        evaluate(
            "Fashion-MNIST",
            fashion_mnist(pool_size),
            seeds,
            args.n_jobs,
            data_note="pool drawn from the official train split, official test split; "
            f"downstream features: {FASHION_MNIST_SETUP['n_components']} PCA components "
            "(fitted on the pool, no labels), standardized",
        ),
        evaluate(
            "digits (scikit-learn)",
            digits(),
            seeds,
            args.n_jobs,
            data_note=f"random {DIGITS_TEST_SIZE}-item test split; downstream features: "
            "the 64 pixels, standardized",
        ),
    ]
    wall = time.perf_counter() - start

    lines = [
        "# ACT quality benchmark (act_sklearn)",
        "",
        f"Command: `{command}`",
        "",
        f"Data/model seed {DATA_SEED}; review-draw seeds {list(seeds)}; budgets "
        f"{', '.join(f'{b:.0%}' for b in BUDGETS)} and the annotator's error rate; "
        f"explore {EXPLORE:g} (sensitivity: {SENSITIVITY_EXPLORE:g}); downstream "
        f"ACTLogisticRegression(C={DOWNSTREAM_C:g}, max_iter={DOWNSTREAM_MAX_ITER}); "
        f"design 'fixed'; power 1 (the ACT paper's loss).",
        "",
        "Design notes: by default the Fashion-MNIST pool is the whole train split outside "
        "the two seed sets (59,000 items) rather than the 20,000 first planned: the ACT loss's "
        "inverse-probability weights (up to 1/π = n/(explore·B) on explored items) make "
        "the downstream fit noisier on smaller pools, and with a 20,000-item pool the "
        "explore > 0 rules scored clearly lower (compare with `--pool-size 20000`). "
        f"explore={EXPLORE:g} as in the example; explore={SENSITIVITY_EXPLORE:g} is shown "
        "at the error-rate budget. Downstream C is the default (1.0), not tuned.",
        "",
        "Columns: human labels = n_human_labels_ (mean over seeds); final-label acc = "
        "accuracy of human-where-reviewed/machine-elsewhere labels against gold; "
        "estimate = label_accuracy_ of the first seed (not estimable when some item "
        "has π = 0); CI covers truth = seeds whose interval holds the true final-label "
        "accuracy; AQG = final minus machine accuracy; budget eff. = errors fixed / "
        "min(reviews, errors); max 1/π = largest ACT weight on a reviewed item (max "
        "over seeds); test acc, ACT = ACTClassifier's downstream test accuracy; "
        "unweighted refit = the same model trained plainly on the run's final labels.",
        "",
    ]
    for result in results:
        lines += dataset_report(result, seeds)
    lines += targets_report(results)
    lines += [f"Wall time: {wall:.0f} s ({args.n_jobs} parallel jobs).", ""]
    report = "\n".join(lines)
    print(report)
    if args.output:
        Path(args.output).write_text(report, encoding="utf-8")


if __name__ == "__main__":
    main()
