"""Quality benchmark of the ACT core on real data, a real weak annotator and a real criticizer.

Run it with::

    python benchmarks/quality.py                        # every task, 3 seeds
    python benchmarks/quality.py --quick                # 5000-item Fashion-MNIST pool, one seed
    python benchmarks/quality.py --tasks digits digits-mlp --output quality.md

Protocol (shared with ``examples/act_fashion_mnist.py``, whose ``build_act_task``
this script imports):

* **Data**: Fashion-MNIST (official train split for the seed sets and the pool:
  all 59,000 train images outside the seed sets, ``--pool-size`` for fewer; the
  official 10,000-image test split for the downstream accuracy); scikit-learn's
  digits (a random 400-item test split, the rest for seeds and pool); 20
  Newsgroups (the eight groups of the demo, official train and test splits,
  TF-IDF reduced to 100 SVD components fitted on the train posts, no labels).
* **Annotator**: a logistic regression trained on a small, class-balanced human
  seed set; its predictions on the pool are the machine labels. No synthetic
  label flipping anywhere.
* **Criticizer**: a random forest (another model family) trained on a second,
  disjoint seed set; ``ClassifierCriticizer`` gives
  ``error_proba = 1 - P_forest(machine label | x)``.
* **Downstream**: ``ACTLogisticRegression`` on standardized features (50 PCA
  components for Fashion-MNIST, the 64 pixels for digits, the 100 SVD components
  for 20 Newsgroups), and for ``digits-mlp`` an ``ACTNeuralNetClassifier``
  (64-64-10 MLP, Adam), trained on the ACT design of an ``ACTSampler`` draw (what
  ``ACTClassifier`` does in simulation mode): the gold labels act as the
  reviewers and are read only where sampled.
* **Methods**: every sampling rule (threshold, normalize, sigmoid, sqrt) with
  ``explore=0`` and ``explore=0.1``, review in 2 and 4 rounds (threshold,
  explore 0.1, the same total budget); "random" reviews a uniform sample.
* **Losses**: every run's review sample trains the downstream model with each
  loss of ``LOSSES``: the ACT paper's (power 1, no clip), ``clip=1``, the
  default ``clip=0.5``, ``power="auto"``, and auto with the default clip. References: all gold labels (full human) and the
  machine labels alone (full machine).
"""

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from joblib import Parallel, delayed
from sklearn.datasets import load_digits
from sklearn.decomposition import TruncatedSVD
from sklearn.exceptions import ConvergenceWarning
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.utils import Bunch

from act_sklearn import ACTSampler
from act_sklearn.stats import act_weights, annotation_quality_gain, budget_efficiency, criticizer_auroc
from act_sklearn.stats.sampling import DEFAULT_EXPLORE

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
from act_fashion_mnist import (  # noqa: E402  (shared set-up, see the module docstring)
    DOWNSTREAM_C,
    DOWNSTREAM_MAX_ITER,
    build_act_task,
    downstream_model,
    fashion_mnist_task,
)

BUDGETS = (0.05, 0.10, 0.15, 0.20, 0.30, 0.40)  # plus the annotator's error rate
RULES = ("threshold", "normalize", "sigmoid", "sqrt")
EXPLORE = DEFAULT_EXPLORE  # explore > 0 variant of every rule (--explore)
ROUNDS = (2, 4)  # review in rounds: threshold, explore EXPLORE, same total budget
SENSITIVITY_EXPLORE = 0.2  # extra runs at the error-rate budget
LOSSES = {  # name: (power, clip, spread_to_neighbors)
    "paper": (1.0, None, False),
    "clip=1": (1.0, 1.0, False),
    "clip=0.5": (1.0, 0.5, False),
    "neighbors": (1.0, 0.5, True),
    "auto": ("auto", None, False),
    "auto+clip=0.5": ("auto", 0.5, False),
}
DEFAULT_LOSS = "neighbors"  # what ACTLogisticRegression and ACTNeuralNetClassifier do by default
SEEDS = (0, 1, 2)  # seeds of the review draw
DATA_SEED = 0  # seed of the splits, seed sets and models
DIGITS_SETUP = dict(annotator_per_class=3, critic_per_class=5, annotator_C=1.0)
DIGITS_TEST_SIZE = 400
NEWSGROUPS_SETUP = dict(annotator_per_class=10, critic_per_class=20, annotator_C=10.0)


def mlp_model():
    """The digits MLP (torch imported only for this task)."""
    import torch

    from act_sklearn import ACTNeuralNetClassifier

    module = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    return ACTNeuralNetClassifier(
        module, optimizer=torch.optim.Adam, lr=0.005, max_epochs=30, batch_size=64, train_split=None
    )


# -- one run --------------------------------------------------------------------


def _fit_loss(task, model, reviewed, pi, power, clip, spread, seed):
    if task.is_mlp:
        import torch

        torch.manual_seed(seed)
    fitted = model.set_params(clip=clip, spread_to_neighbors=spread).fit(
        task.X_pool,
        np.where(reviewed, task.y_pool, -1),
        machine_labels=task.machine_labels,
        act_weight=act_weights(reviewed, pi),
        power=power,
    )
    return fitted.score(task.X_test, task.y_test), fitted.power_


def _run(task, budget, rule, explore, rounds, seed, losses):
    """One review draw, and the downstream model trained on it with every loss."""
    y_pool, machine = task.y_pool, task.machine_labels
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        sampler = ACTSampler(
            budget=budget, rule=rule or "threshold", explore=explore, rounds=rounds, random_state=seed
        )
        error_proba = np.full(y_pool.size, 0.5) if rule is None else task.error_proba  # no critic: uniform
        if rounds > 1:  # the gold labels answer each round's reviews
            sampler.fit(error_proba, y_pool, machine_labels=machine)
        else:
            sampler.fit(error_proba)
        reviewed, pi = sampler.reviewed_.astype(bool), sampler.inclusion_proba_
        accuracy, power = {}, {}
        certain = np.all((pi[reviewed] == 1))  # weights 0 or 1: every loss is plain training
        for name in losses:
            loss_power, clip, spread = LOSSES[name]
            if certain and accuracy:
                first = next(iter(accuracy))
                accuracy[name], power[name] = accuracy[first], power[first]
                continue
            accuracy[name], power[name] = _fit_loss(
                task, task.make_model(), reviewed, pi, loss_power, clip, spread, seed
            )
    return dict(
        budget=budget,
        rule=rule,
        explore=explore,
        rounds=rounds,
        seed=seed,
        n_human=int(reviewed.sum()),
        aqg=annotation_quality_gain(y_pool, machine, reviewed),
        efficiency=budget_efficiency(y_pool, machine, reviewed),
        max_weight=float(np.max(1.0 / pi[reviewed])) if reviewed.any() else 0.0,
        accuracy=accuracy,
        power=power,
        n_convergence_warnings=sum(issubclass(w.category, ConvergenceWarning) for w in caught),
        seconds=time.perf_counter() - start,
    )


# -- one task -------------------------------------------------------------------


def _method_name(rule, explore, rounds=1):
    if rule is None:
        return "random (no critic)"
    return f"{rule}, explore={explore:g}" + (f", {rounds} rounds" if rounds > 1 else "")


def methods():
    one_round = [(None, 0.0, 1)] + [(rule, ex, 1) for rule in RULES for ex in (0.0, EXPLORE)]
    return one_round + [("threshold", EXPLORE, r) for r in ROUNDS]


def evaluate(task, seeds, n_jobs, losses):
    """All budgets, methods and losses on one task."""
    y_pool, machine = task.y_pool, task.machine_labels
    machine_accuracy = float(np.mean(machine == y_pool))
    error_budget = round(1 - machine_accuracy, 2)
    budgets = sorted(set(BUDGETS) | {error_budget})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if task.is_mlp:
            import torch

            torch.manual_seed(DATA_SEED)
        human = task.make_model().fit(task.X_pool, y_pool).score(task.X_test, task.y_test)
        if task.is_mlp:
            torch.manual_seed(DATA_SEED)
        machine_only = task.make_model().fit(task.X_pool, machine).score(task.X_test, task.y_test)
    jobs = [(b, rule, ex, r, s) for b in budgets for rule, ex, r in methods() for s in seeds]
    jobs += [(error_budget, rule, SENSITIVITY_EXPLORE, 1, s) for rule in RULES for s in seeds]
    runs = Parallel(n_jobs=n_jobs)(delayed(_run)(task, *job, losses) for job in jobs)
    return dict(
        task=task,
        machine_accuracy=machine_accuracy,
        auroc=criticizer_auroc(y_pool, machine, task.error_proba),
        error_budget=error_budget,
        budgets=budgets,
        human=human,
        machine=machine_only,
        runs=runs,
        fit_seconds=sum(r["seconds"] for r in runs),
        n_convergence_warnings=sum(r["n_convergence_warnings"] for r in runs),
    )


def _select(result, budget, rule, explore, rounds=1):
    return [
        r
        for r in result["runs"]
        if (r["budget"], r["rule"], r["explore"], r["rounds"]) == (budget, rule, explore, rounds)
    ]


def _accuracies(runs, loss):
    return np.array([r["accuracy"][loss] for r in runs])


# -- report -----------------------------------------------------------------------


def task_report(result, seeds):
    task, r = result["task"], result
    losses = list(r["runs"][0]["accuracy"])
    lines = [
        f"## {task.name}",
        "",
        f"- pool: {task.y_pool.size} items, test: {task.y_test.size} items; {task.note}",
        f"- machine-label accuracy on the pool **{r['machine_accuracy']:.2%}**; criticizer AUROC "
        f"**{r['auroc']:.3f}**",
        f"- references (downstream test accuracy): full human **{r['human']:.2%}**, full machine "
        f"**{r['machine']:.2%}**",
        f"- budget marked * = the annotator's error rate ({r['error_budget']:.0%}); test accuracy as "
        f"mean (worst seed) over seeds {list(seeds)}; λ̂ = mean power chosen by `power=\"auto\"` (with clip=0.5, cut, where run)",
        "",
        "| budget | method | AQG | budget eff. | max 1/π | "
        + " | ".join(f"test acc, {loss}" for loss in losses)
        + " | λ̂ |",
        "|---|---|---:|---:|---:|" + "---:|" * len(losses) + "---:|",
    ]
    rows = [(b, m) for b in r["budgets"] for m in methods()]
    rows += [(r["error_budget"], (rule, SENSITIVITY_EXPLORE, 1)) for rule in RULES]
    for budget, (rule, explore, rounds) in rows:
        runs = _select(r, budget, rule, explore, rounds)
        label = f"{budget:.0%}" + ("*" if budget == r["error_budget"] else "")
        cells = []
        for loss in losses:
            accuracy = _accuracies(runs, loss)
            mark = "**" if accuracy.min() < r["machine"] else ""
            cells.append(f"{mark}{accuracy.mean():.2%} ({accuracy.min():.2%}){mark}")
        powers = [run["power"].get("auto+clip=0.5", run["power"].get("auto", np.nan)) for run in runs]
        lines.append(
            f"| {label} | {_method_name(rule, explore, rounds)} | {np.mean([x['aqg'] for x in runs]):+.2%} | "
            f"{np.mean([x['efficiency'] for x in runs]):.3f} | {max(x['max_weight'] for x in runs):.3g} | "
            + " | ".join(cells)
            + f" | {np.mean(powers):.2f} |"
        )
    lines += [
        "",
        "Bold: some seed below full-machine training. "
        f"Downstream fits: {len(r['runs'])} review draws x {len(losses)} losses in {r['fit_seconds']:.0f} s of "
        f"worker time; L-BFGS convergence warnings: {r['n_convergence_warnings']}.",
        "",
    ]
    return lines


def targets_report(results):
    power, clip, _ = LOSSES[DEFAULT_LOSS]
    lines = ["## Targets", "", f"The default loss is **{DEFAULT_LOSS}** (power {power:g}, clip {clip:g}, spread to "
             f"neighbours); the default rule is threshold with explore {DEFAULT_EXPLORE:g}"
             + ("." if EXPLORE == DEFAULT_EXPLORE else f"; this run's explore is {EXPLORE:g}, so 'the default "
                f"rule' below means threshold with explore {EXPLORE:g}."), ""]
    losses = list(results[0]["runs"][0]["accuracy"])
    for loss in losses:
        below, below_default, below_in_rounds = [], 0, 0
        for r in results:
            for budget in r["budgets"]:
                for rule, explore, rounds in methods():
                    accuracy = _accuracies(_select(r, budget, rule, explore, rounds), loss)
                    if accuracy.min() < r["machine"]:
                        default_rule = rule == "threshold" and explore == EXPLORE
                        below_default += default_rule and rounds == 1
                        below_in_rounds += default_rule and rounds > 1
                        below.append(
                            f"{r['task'].name} {budget:.0%} {_method_name(rule, explore, rounds)}: "
                            f"mean {accuracy.mean():.2%}, worst {accuracy.min():.2%} vs {r['machine']:.2%}"
                        )
        n_configs = sum(len(r["budgets"]) * len(methods()) for r in results)
        n_default = sum(len(r["budgets"]) for r in results)
        # the target (issue #12) is on the default settings; every other method is reported beside it
        lines.append(
            f"- loss **{loss}**, default rule (threshold, explore {EXPLORE:g}, one round): {below_default} of "
            f"{n_default} (task, budget) configurations have a seed below full-machine training -> "
            f"**{'MET' if not below_default else 'NOT MET'}**. In 2 or 4 rounds: {below_in_rounds} of "
            f"{n_default * len(ROUNDS)}. Over every method: {len(below)} of {n_configs}"
            + (":" if below else ".")
        )
        lines += [f"    - {line}" for line in below[:12]]
        if len(below) > 12:
            lines.append(f"    - ... and {len(below) - 12} more")
    fashion = next((r for r in results if r["task"].name.startswith("Fashion")), None)
    if fashion is not None:
        lines.append("")
        for loss in losses:
            gaps = [
                (fashion["human"] - _accuracies(_select(fashion, fashion["error_budget"], rule, ex), loss).mean(), rule, ex)
                for rule in RULES
                for ex in (0.0, EXPLORE)
            ]
            default_gap = next(g for g, rl, e in gaps if rl == "threshold" and e == EXPLORE)
            best_gap, rule, ex = min(gaps)
            lines.append(
                f"- Fashion-MNIST at the error-rate budget ({fashion['error_budget']:.0%}), loss {loss}, default "
                f"rule (threshold, explore {EXPLORE:g}): gap to full human {100 * default_gap:.2f} points (target "
                f"<= 1.00) -> **{'MET' if default_gap <= 0.01 else 'NOT MET'}**. Best method: "
                f"{_method_name(rule, ex)}, {100 * best_gap:.2f}; explore={EXPLORE:g} rules: "
                + ", ".join(f"{rl} {100 * g:.2f}" for g, rl, e in gaps if e > 0)
            )
    lines.append("")
    for r in results:
        gains = []
        for budget in r["budgets"]:
            one = np.mean([x["efficiency"] for x in _select(r, budget, "threshold", EXPLORE, 1)])
            gains.append(
                f"{budget:.0%}: "
                + ", ".join(
                    f"R={rounds} {np.mean([x['efficiency'] for x in _select(r, budget, 'threshold', EXPLORE, rounds)]) - one:+.3f}"
                    for rounds in ROUNDS
                )
            )
        lines.append(f"- rounds vs one round, budget efficiency (threshold, explore={EXPLORE:g}), {r['task'].name}: " + "; ".join(gains))
    lines.append("")
    return lines


# -- tasks -------------------------------------------------------------------------


def _named(task, name, note, make_model=downstream_model):
    """A task of ``build_act_task`` with its report name and downstream model."""
    return Bunch(**task, name=name, note=note, make_model=make_model, is_mlp=make_model is mlp_model)


def fashion_mnist(pool_size):
    task = fashion_mnist_task(random_state=DATA_SEED, pool_size=pool_size)
    return _named(task, "Fashion-MNIST (linear)", "official splits; downstream: 50 PCA components, standardized")


def _digits_task():
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    order = np.random.default_rng(DATA_SEED).permutation(y.size)
    test, train = order[:DIGITS_TEST_SIZE], order[DIGITS_TEST_SIZE:]
    return build_act_task(X[train], y[train], X[test], y[test], random_state=DATA_SEED, **DIGITS_SETUP)


def digits():
    note = f"random {DIGITS_TEST_SIZE}-item test split; downstream: the 64 pixels, standardized"
    return _named(_digits_task(), "digits (linear)", note)


def digits_mlp():
    task = _digits_task()
    task.X_pool, task.X_test = task.X_pool.astype(np.float32), task.X_test.astype(np.float32)
    note = "as digits (linear); downstream: ACTNeuralNetClassifier 64-64-10, Adam lr 0.005, 30 epochs"
    return _named(task, "digits (MLP)", note, make_model=mlp_model)


def newsgroups():
    from act_sklearn.datasets import DEMO_NEWSGROUPS, load_newsgroups

    posts, groups = load_newsgroups(subset="train", categories=DEMO_NEWSGROUPS, return_X_y=True)
    test_posts, test_groups = load_newsgroups(subset="test", categories=DEMO_NEWSGROUPS, return_X_y=True)
    tfidf = TfidfVectorizer(min_df=3, max_df=0.5, sublinear_tf=True).fit(posts)
    svd = TruncatedSVD(100, random_state=DATA_SEED).fit(tfidf.transform(posts))
    X, X_test = svd.transform(tfidf.transform(posts)), svd.transform(tfidf.transform(test_posts))
    task = build_act_task(
        X, np.asarray(groups), X_test, np.asarray(test_groups), random_state=DATA_SEED, **NEWSGROUPS_SETUP
    )
    note = f"{len(DEMO_NEWSGROUPS)} groups, official splits; TF-IDF -> 100 SVD components, standardized"
    return _named(task, "20 Newsgroups (linear)", note)


TASKS = {
    "fashion": fashion_mnist,
    "digits": digits,
    "digits-mlp": digits_mlp,
    "newsgroups": newsgroups,
}


def main(argv=None):
    global EXPLORE  # --explore; the jobs are built here, so the workers need not know it
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="Fashion-MNIST pool of 5000 items, one seed")
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS))
    parser.add_argument("--losses", nargs="+", choices=list(LOSSES), default=list(LOSSES))
    parser.add_argument("--seeds", type=int, default=None, help="number of review-draw seeds (default 3)")
    parser.add_argument("--output", metavar="FILE.md", help="also write the report here")
    parser.add_argument("--n-jobs", type=int, default=2, help="parallel fits (default 2)")
    parser.add_argument("--pool-size", type=int, default=None, help="Fashion-MNIST pool size (default 59000)")
    parser.add_argument("--explore", type=float, default=EXPLORE,
                        help=f"explore of every rule's explore > 0 variant and of the rounds (default {EXPLORE:g})")
    args = parser.parse_args(argv)
    EXPLORE = args.explore
    command = "python benchmarks/quality.py" + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    start = time.perf_counter()
    seeds = SEEDS[: args.seeds or (1 if args.quick else len(SEEDS))]
    pool_size = args.pool_size or (5000 if args.quick else None)

    results = []
    for name in args.tasks:
        task = fashion_mnist(pool_size) if name == "fashion" else TASKS[name]()
        task_start = time.perf_counter()
        results.append(evaluate(task, seeds, args.n_jobs, args.losses))
        print(f"{task.name}: {time.perf_counter() - task_start:.0f} s", file=sys.stderr)
    wall = time.perf_counter() - start

    lines = [
        "# ACT quality benchmark (act_sklearn)",
        "",
        f"Command: `{command}`",
        "",
        f"Data/model seed {DATA_SEED}; review-draw seeds {list(seeds)}; budgets "
        f"{', '.join(f'{b:.0%}' for b in BUDGETS)} and the annotator's error rate; explore {EXPLORE:g} "
        f"(sensitivity: {SENSITIVITY_EXPLORE:g}); rounds {ROUNDS} on the threshold rule; linear downstream "
        f"ACTLogisticRegression(C={DOWNSTREAM_C:g}, max_iter={DOWNSTREAM_MAX_ITER}); design 'fixed'. "
        "Losses: " + "; ".join(
            f"{name} = power {LOSSES[name][0]}, clip {LOSSES[name][1]}" + (", spread to neighbours" * LOSSES[name][2])
            for name in args.losses
        ) + ".",
        "",
        "Columns: AQG = final-label accuracy minus machine accuracy; budget eff. = errors fixed / "
        "min(reviews, errors); max 1/π = largest ACT weight on a reviewed item; test acc = the downstream "
        "model's accuracy on the test split, trained on the same review sample with each loss.",
        "",
    ]
    for result in results:
        lines += task_report(result, seeds)
    lines += targets_report(results)
    lines += [f"Wall time: {wall:.0f} s ({args.n_jobs} parallel jobs).", ""]
    report = "\n".join(lines)
    print(report)
    if args.output:
        Path(args.output).write_text(report, encoding="utf-8")


if __name__ == "__main__":
    main()
