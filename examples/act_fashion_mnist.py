"""ACT end to end on Fashion-MNIST, offline: a weak annotator, a cross-criticizer, a budget.

Run it with::

    python examples/act_fashion_mnist.py

Needs the Fashion-MNIST files of Debian's package (``apt-get install
dataset-fashion-mnist``); nothing is downloaded. About a minute on 2 cores.

The set-up stands in for "an LLM labels, a second LLM criticizes, humans review":

* **annotator** (the weak labeller): a logistic regression trained on 50 human
  labels per class; its predictions on the pool are the machine labels.
* **criticizer** (a different model on different human labels): a random forest
  trained on another 50 labels per class; ``ClassifierCriticizer`` turns it into
  ``error_proba = 1 - P_forest(machine label | x)``.
* **downstream**: ``ACTLogisticRegression`` on 50 PCA components of the pool
  (PCA is fitted without labels), trained with ``ACTClassifier`` in simulation
  mode: the gold labels act as the human reviewers, read only where sampled.

``benchmarks/quality.py`` imports :func:`build_act_task` from this file, so the
example and the benchmark share one set-up.
"""

import time

import numpy as np
from sklearn.decomposition import PCA
from sklearn.ensemble import RandomForestClassifier
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils import Bunch

from act_sklearn import (
    ACTClassifier,
    ACTLogisticRegression,
    ACTSampler,
    ClassifierCriticizer,
)
from act_sklearn.datasets import load_fashion_mnist
from act_sklearn.stats import criticizer_auroc, expected_calibration_error

COMMAND = "python examples/act_fashion_mnist.py"

# The Fashion-MNIST set-up (benchmarks/quality.py uses the same numbers).
FASHION_MNIST_SETUP = dict(
    pool_size=None,  # items to annotate: the 59,000 train items outside the seed sets
    annotator_per_class=50,  # human seed labels for the annotator: 500 in all
    critic_per_class=50,  # a disjoint human seed set for the criticizer: 500 in all
    annotator_C=0.1,  # chosen so that the annotator is about 78% accurate (ACT paper)
    n_components=50,  # PCA components for the downstream model
)
DOWNSTREAM_C = 1.0
DOWNSTREAM_MAX_ITER = 500


def _stratified_seed(y, candidates, per_class, rng):
    """``per_class`` random items of each class among ``candidates``."""
    chosen = [
        rng.choice(candidates[y[candidates] == label], per_class, replace=False)
        for label in np.unique(y[candidates])
    ]
    return np.sort(np.concatenate(chosen))


def build_act_task(
    X,
    y,
    X_test,
    y_test,
    *,
    pool_size=None,
    annotator_per_class,
    critic_per_class,
    annotator_C,
    n_components=None,
    random_state=0,
):
    """Split the data, train the annotator and the criticizer, label and score the pool.

    Parameters
    ----------
    X, y : arrays of shape (n_samples, n_features) and (n_samples,)
        Labelled data for the two seed sets and the pool (disjoint).
    X_test, y_test : arrays
        Held-out data for the downstream accuracy.
    pool_size : int or None
        Items in the pool to annotate (random); None means all items left over.
    annotator_per_class, critic_per_class : int
        Sizes of the two human-labelled seed sets, per class.
    annotator_C : float
        Regularisation of the annotator's logistic regression (weaker annotators
        for smaller values).
    n_components : int or None
        PCA components for the downstream features (None: standardized inputs).
    random_state : int

    Returns
    -------
    task : Bunch
        ``X_pool``, ``X_test`` (downstream features), ``y_pool`` (gold, the
        simulated reviewers), ``y_test``, ``machine_labels``, ``error_proba``,
        ``annotator``, ``criticizer``, ``critic_accuracy`` (the forest's own
        accuracy on the pool), ``n_annotator_seed`` and ``n_critic_seed``.
    """
    rng = np.random.default_rng(random_state)
    everything = np.arange(y.size)
    annotator_seed = _stratified_seed(y, everything, annotator_per_class, rng)
    rest = np.setdiff1d(everything, annotator_seed)
    critic_seed = _stratified_seed(y, rest, critic_per_class, rng)
    rest = np.setdiff1d(rest, critic_seed)
    pool = rest if pool_size is None else np.sort(rng.choice(rest, pool_size, replace=False))

    # The weak annotator: a linear model on raw inputs, few labels.
    annotator = LogisticRegression(C=annotator_C, max_iter=1000)
    annotator.fit(X[annotator_seed], y[annotator_seed])
    machine_labels = annotator.predict(X[pool])

    # The cross-criticizer: another model family, trained on other labels.
    forest = RandomForestClassifier(n_estimators=300, n_jobs=2, random_state=random_state)
    forest.fit(X[critic_seed], y[critic_seed])
    criticizer = ClassifierCriticizer(FrozenEstimator(forest)).fit()
    error_proba = criticizer.predict_error_proba(X[pool], machine_labels)

    # Downstream features: PCA fitted on the pool without labels, then standardized.
    steps = [PCA(n_components, random_state=random_state)] if n_components else []
    features = make_pipeline(*steps, StandardScaler()).fit(X[pool])
    return Bunch(
        X_pool=features.transform(X[pool]),
        y_pool=y[pool],
        machine_labels=machine_labels,
        error_proba=error_proba,
        X_test=features.transform(X_test),
        y_test=y_test,
        annotator=annotator,
        criticizer=criticizer,
        critic_accuracy=forest.score(X[pool], y[pool]),
        n_annotator_seed=annotator_seed.size,
        n_critic_seed=critic_seed.size,
    )


def fashion_mnist_task(random_state=0, **overrides):
    """:func:`build_act_task` on Fashion-MNIST with :data:`FASHION_MNIST_SETUP`."""
    X, y = load_fashion_mnist(subset="train", return_X_y=True)
    X_test, y_test = load_fashion_mnist(subset="test", return_X_y=True)
    setup = {**FASHION_MNIST_SETUP, **overrides}
    return build_act_task(X, y, X_test, y_test, random_state=random_state, **setup)


def downstream_model():
    """The downstream classifier every method trains."""
    return ACTLogisticRegression(C=DOWNSTREAM_C, max_iter=DOWNSTREAM_MAX_ITER)


def main():
    start = time.perf_counter()
    task = fashion_mnist_task(random_state=0)
    y_pool, machine = task.y_pool, task.machine_labels
    machine_accuracy = np.mean(machine == y_pool)
    print(f"Reproduce with: {COMMAND}")
    print(
        f"Pool: {y_pool.size} items; test: {task.y_test.size}; human seed labels: "
        f"{task.n_annotator_seed} (annotator) + {task.n_critic_seed} (criticizer)"
    )
    print(f"Annotator (machine-label) accuracy: {machine_accuracy:.2%}")
    print(
        f"Criticizer AUROC: {criticizer_auroc(y_pool, machine, task.error_proba):.3f}, "
        f"ECE: {expected_calibration_error(y_pool, machine, task.error_proba):.3f}"
    )

    # Review a budget about equal to the annotator's error rate.
    budget = round(1 - machine_accuracy, 2)
    # the default loss spreads the negative ACT weights of explored items onto their unreviewed
    # neighbours (clip=0.5 per neighbour), so no weight is negative (the README's benchmark notes)
    act = ACTClassifier(downstream_model(), sampler=ACTSampler(budget=budget, random_state=0))
    act.fit(task.X_pool, y_pool, machine_labels=machine, error_proba=task.error_proba)
    print(f"\nACT, budget {budget:.0%}, the defaults: threshold rule, explore={act.sampler.explore:g}, the default loss")
    print(f"  human labels read: {act.n_human_labels_}")
    print(f"  estimate: {act.label_accuracy_}")
    print(f"  true final-label accuracy: {np.mean(act.final_labels_ == y_pool):.2%}")

    def act_accuracy(rule, explore, **loss):
        sampler = ACTSampler(budget=budget, rule=rule, explore=explore, random_state=0)
        other = ACTClassifier(downstream_model().set_params(**loss), sampler=sampler)
        other.fit(task.X_pool, y_pool, machine_labels=machine, error_proba=task.error_proba)
        return other.score(task.X_test, task.y_test)

    full_human = downstream_model().fit(task.X_pool, y_pool)
    full_machine = downstream_model().fit(task.X_pool, machine)
    rows = [
        (f"full human labels ({y_pool.size} reviews)", full_human.score(task.X_test, task.y_test)),
        (f"ACT {budget:.0%}, threshold, explore=0.3, default loss", act.score(task.X_test, task.y_test)),
        (f"ACT {budget:.0%}, threshold, explore=0.3, clip=0.5 cut",
         act_accuracy("threshold", 0.3, spread_to_neighbors=False)),
        (f"ACT {budget:.0%}, threshold, explore=0.3, exact loss", act_accuracy("threshold", 0.3, clip=None)),
        (f"ACT {budget:.0%}, threshold, explore=0.1, default loss", act_accuracy("threshold", 0.1)),
        (f"ACT {budget:.0%}, threshold, explore=0", act_accuracy("threshold", 0.0)),
        (f"ACT {budget:.0%}, normalize, explore=0.3, default loss", act_accuracy("normalize", 0.3)),
        ("machine labels only (0 reviews)", full_machine.score(task.X_test, task.y_test)),
    ]
    print(f"\nDownstream test accuracy ({task.y_test.size} test images, same model and features):")
    for name, accuracy in rows:
        print(f"  {name:<52} {accuracy:.2%}")
    print(f"\nWall time: {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
