"""Review in rounds: budget efficiency of R = 2 and 4 rounds against one, over many review draws.

Run it with::

    python benchmarks/rounds.py                      # Fashion-MNIST, digits, 20 Newsgroups; 30 draws
    python benchmarks/rounds.py --tasks digits --seeds 10

The tasks, machine labels and criticizers are those of ``benchmarks/quality.py``.
Each review draw (a seed) runs ``ACTSampler(rule="threshold")`` (the default explore) in
one round and in R rounds at the same total budget, the gold labels answering
each round; budget efficiency is the share of the attainable errors found
(``act_sklearn.stats.budget_efficiency``). Efficiency needs no downstream fit,
so this measures with ten times the draws ``quality.py`` can afford: at 3
draws the difference between rounds and one round is mostly noise. Reported
per budget: one round's mean efficiency, and the mean difference of R rounds
with its standard error over the draws (paired by seed).

Target (issue #12): rounds raise budget efficiency over one round at every
budget. A difference within two standard errors of 0 is reported as such.
"""

import argparse
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import quality  # noqa: E402  (the tasks)

from act_sklearn import ACTSampler  # noqa: E402
from act_sklearn.stats import budget_efficiency  # noqa: E402
from act_sklearn.stats.recalibration import MAX_WEIGHT  # noqa: E402
from act_sklearn.stats.sampling import DEFAULT_EXPLORE  # noqa: E402

RESULTS = HERE / "results" / "rounds.md"
BUDGETS = (0.05, 0.10, 0.15, 0.20, 0.30, 0.40)
ROUNDS = (2, 4)
EXPLORE = DEFAULT_EXPLORE


def efficiency(task, budget, rounds, seed):
    sampler = ACTSampler(budget=budget, rule="threshold", explore=EXPLORE, rounds=rounds, random_state=seed)
    if rounds > 1:
        sampler.fit(task.error_proba, task.y_pool, machine_labels=task.machine_labels)
    else:
        sampler.fit(task.error_proba)
    return budget_efficiency(task.y_pool, task.machine_labels, sampler.reviewed_.astype(bool))


def task_rows(task, seeds):
    rows = []
    for budget in BUDGETS:
        one = np.array([efficiency(task, budget, 1, seed) for seed in seeds])
        differences = {r: np.array([efficiency(task, budget, r, seed) for seed in seeds]) - one for r in ROUNDS}
        rows.append((budget, one.mean(), {r: (d.mean(), d.std(ddof=1) / np.sqrt(d.size)) for r, d in differences.items()}))
        print(f"  {budget:.0%}: one round {one.mean():.3f}; "
              + "; ".join(f"R={r} {m:+.3f} (s.e. {se:.3f})" for r, (m, se) in rows[-1][2].items()), flush=True)
    return rows


def verdict(mean, se):
    if mean - 2 * se > 0:
        return "gain"
    if mean + 2 * se < 0:
        return "**loss**"
    return "within noise"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["fashion", "digits", "newsgroups"],
                        choices=["fashion", "digits", "newsgroups"])
    parser.add_argument("--seeds", type=int, default=30)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")  # the tasks' annotators warn about convergence; efficiency does not care
    start = time.perf_counter()
    seeds = range(args.seeds)
    lines = [
        "# Review in rounds: budget efficiency against one round", "",
        f"Threshold rule, explore {EXPLORE}, {args.seeds} review draws per cell (paired by seed); the tasks of "
        "`benchmarks/quality.py`. Each cell: the mean difference in budget efficiency (errors found over those "
        "attainable) of R rounds minus one round, its standard error, and whether it is a gain or a loss beyond "
        "two standard errors.", "",
    ]
    verdicts = []
    for name in args.tasks:
        task = quality.fashion_mnist(None) if name == "fashion" else quality.TASKS[name]()
        print(task.name, flush=True)
        rows = task_rows(task, seeds)
        lines += [f"## {task.name}", "", "| budget | one round | " + " | ".join(f"R = {r} − one" for r in ROUNDS) + " |",
                  "|---|---:|" + "---:|" * len(ROUNDS)]
        for budget, one, differences in rows:
            cells = []
            for r in ROUNDS:
                mean, se = differences[r]
                cells.append(f"{mean:+.3f} ± {se:.3f} ({verdict(mean, se)})")
                verdicts.append(verdict(mean, se))
            lines.append(f"| {budget:.0%} | {one:.3f} | " + " | ".join(cells) + " |")
        lines.append("")
    gains, losses = verdicts.count("gain"), verdicts.count("**loss**")
    met = "**MET**" if gains == len(verdicts) else "**NOT MET**"
    lines += [
        f"Target (rounds raise budget efficiency at every budget): a gain beyond two standard errors in {gains} of "
        f"{len(verdicts)} cells, a loss in {losses}, within noise in {len(verdicts) - gains - losses} -> {met}. "
        "The recalibration truncates the 1 / pi weights at "
        f"{MAX_WEIGHT:g} (`act_sklearn/stats/recalibration.py` says why).", "",
        f"Machine: {platform.platform()}, Python {platform.python_version()}; "
        f"{(time.perf_counter() - start) / 60:.1f} min.", "",
        "Reproduce with:", "", "```",
        "python benchmarks/rounds.py" + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:])),
        "```", "",
    ]
    text = "\n".join(lines)
    args.output.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
