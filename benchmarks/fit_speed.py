"""Fit time of ACTLogisticRegression against scikit-learn's LogisticRegression.

Same data (n=100,000, 300 features, 10 classes), same objective, same solver
settings (lbfgs, tol=1e-4, max_iter=100), timed in one process, best of
``--repeats``. Three cases:

* ordinary labels: both fit ``(X, y)``;
* the ACT design (sigmoid rule, explore=0.1, 20% budget, power=1), exact loss
  (``clip=None``): ours fits the ACT loss directly; scikit-learn fits the
  equivalent two-rows-per-reviewed-item expansion with signed sample weights (the
  same objective, on more rows);
* the same design with the default loss, whose negative weights are spread onto
  neighbours: ours includes the neighbour search, against the same scikit-learn
  fit (another objective, so no coefficient comparison).

Target: ACTLogisticRegression at most 1.5 times as slow as scikit-learn.

Reproduce with: python benchmarks/fit_speed.py
"""

import argparse
import platform
import sys
import time
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from act_sklearn import ACTLogisticRegression, ACTSampler
from act_sklearn.models.neighbor_spread import spread_to_neighbors
from act_sklearn.stats import act_coefficients, act_soft_targets, act_weights

TARGET_RATIO = 1.5


def make_data(n_samples, n_features, n_classes, seed):
    """A linear 10-class problem with label noise and a machine annotator that errs 25% of the time."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_samples, n_features))
    coef = rng.standard_normal((n_classes, n_features)) * 0.1
    y = np.argmax(X @ coef.T + rng.gumbel(size=(n_samples, n_classes)), axis=1)
    wrong = rng.random(n_samples) < 0.25
    machine = np.where(wrong, rng.integers(0, n_classes, n_samples), y)
    error_proba = np.clip(0.4 * wrong + 0.6 * rng.random(n_samples), 0, 1)
    return X, y, machine, error_proba


def best_time(fit, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model = fit()
        times.append(time.perf_counter() - start)
    return min(times), model


def _design(n_samples, args):
    X, y, machine, error_proba = make_data(n_samples, args.n_features, args.n_classes, args.seed)
    sampler = ACTSampler(budget=0.2, rule="sigmoid", explore=0.1, random_state=args.seed).fit(error_proba)
    return X, y, machine, sampler


def spread_scaling(args):
    """Seconds of the neighbour spread alone (the default loss's extra work) over pool sizes."""
    print(f"# Neighbour spread alone: sigmoid, explore=0.1, 20%; {args.n_features} features, best of {args.repeats}\n")
    print("| items | reviewed items with a negative weight | seconds |")
    print("|---:|---:|---:|")
    for n_samples in args.spread_scaling:
        X, y, machine, sampler = _design(n_samples, args)
        weights = act_weights(sampler.reviewed_, sampler.inclusion_proba_)
        exact = act_soft_targets(machine, np.where(sampler.reviewed_, y, 0), weights, args.n_classes)
        n_negative = int(np.sum(exact[np.arange(n_samples), machine] < 0))
        seconds, _ = best_time(lambda: spread_to_neighbors(exact.copy(), machine, weights, X, 0.5), args.repeats)
        print(f"| {n_samples:,} | {n_negative:,} | {seconds:.2f} |")
    print("\nReproduce: python benchmarks/fit_speed.py " + " ".join(sys.argv[1:]))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-samples", type=int, default=100_000)
    parser.add_argument("--n-features", type=int, default=300)
    parser.add_argument("--n-classes", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--spread-scaling", type=int, nargs="+", metavar="N",
                        help="instead: time the default loss's neighbour spread alone at these pool sizes")
    args = parser.parse_args()
    if args.spread_scaling:
        return spread_scaling(args)
    warnings.simplefilter("ignore", ConvergenceWarning)  # both stop at max_iter alike

    X, y, machine, sampler = _design(args.n_samples, args)
    weights = act_weights(sampler.reviewed_, sampler.inclusion_proba_)
    human = np.where(sampler.reviewed_, y, -1)
    machine_coef, human_coef = act_coefficients(weights, power=1.0)
    rows = np.concatenate([np.flatnonzero(machine_coef), np.flatnonzero(human_coef)])
    row_labels = np.concatenate([machine[machine_coef != 0], y[human_coef != 0]])
    row_weights = np.concatenate([machine_coef[machine_coef != 0], human_coef[human_coef != 0]])
    X_rows = X[rows]

    cases = {
        "ordinary labels": (
            lambda: ACTLogisticRegression().fit(X, y),
            lambda: LogisticRegression().fit(X, y),
        ),
        # the exact loss: the same objective as the signed-weight expansion, so the same path
        "ACT design (sigmoid, explore=0.1, 20%), exact loss": (
            lambda: ACTLogisticRegression(clip=None).fit(X, human, machine_labels=machine, act_weight=weights),
            lambda: LogisticRegression().fit(X_rows, row_labels, sample_weight=row_weights),
        ),
        # the default loss moves the negative weights onto neighbours: another objective (coef diff
        # not comparable), timed with its neighbour search against the same scikit-learn fit
        "ACT design, default loss (spread to neighbours)": (
            lambda: ACTLogisticRegression().fit(X, human, machine_labels=machine, act_weight=weights),
            lambda: LogisticRegression().fit(X_rows, row_labels, sample_weight=row_weights),
        ),
    }
    print(f"# Fit speed: n={args.n_samples:,}, {args.n_features} features, {args.n_classes} classes")
    print(f"machine: {platform.processor() or platform.machine()}, best of {args.repeats}\n")
    print("| case | ACTLogisticRegression (s) | LogisticRegression (s) | ratio | iterations (ours/theirs) | max coef diff |")
    print("|---|---|---|---|---|---|")
    ratios = []
    for name, (ours_fit, theirs_fit) in cases.items():
        ours_time, ours = best_time(ours_fit, args.repeats)
        theirs_time, theirs = best_time(theirs_fit, args.repeats)
        ratio = ours_time / theirs_time
        ratios.append(ratio)
        diff = "–" if "default loss" in name else f"{np.abs(ours.coef_ - theirs.coef_).max():.1e}"
        print(
            f"| {name} | {ours_time:.2f} | {theirs_time:.2f} | {ratio:.2f} | "
            f"{ours.n_iter_[0]}/{theirs.n_iter_[0]} | {diff} |"
        )
    met = all(ratio <= TARGET_RATIO for ratio in ratios)
    print(f"\nTarget (ratio <= {TARGET_RATIO}): {'met' if met else 'NOT met'} "
          f"(worst ratio {max(ratios):.2f}).")
    print("Reproduce: python benchmarks/fit_speed.py")


if __name__ == "__main__":
    main()
