"""Stability of the ACT loss for a neural network: ACTNeuralNetClassifier on Fashion-MNIST.

Run it with::

    python benchmarks/torch_stability.py                  # 20-30 min on 2 CPU cores
    python benchmarks/torch_stability.py --quick          # 5000-item pool, one seed, ~1 min
    python benchmarks/torch_stability.py --device cuda    # on a GPU

The task is the one of ``benchmarks/quality.py`` (``fashion_mnist_task`` of
``examples/act_fashion_mnist.py``): a logistic-regression annotator trained on
500 human labels (about 79% accurate), a random-forest criticizer trained on 500
others, the gold labels acting as reviewers. The downstream model is a neural
network (``--module mlp``: 784-256-10 on standardized pixels; ``cnn``: two conv
blocks) trained with Adam through ``ACTNeuralNetClassifier``.

For every budget from 5% to 40%, every sampling rule (threshold, normalize,
sigmoid) is run with explore 0 and 0.1 and with the exact ACT loss and
``clip=1`` (``--clips``; a clip spreads the negative weights onto neighbours, the
default, or with ``--cut`` cuts them), over several seeds (the seed draws the review sample and the network's
initialisation), against the same network trained on all gold labels (full
human) and on the machine labels alone (full machine) with the same seeds.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from joblib import Parallel, delayed
from skorch.callbacks import Callback

from act_sklearn import ACTClassifier, ACTNeuralNetClassifier, ACTSampler

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "examples"))
from act_fashion_mnist import fashion_mnist_task  # noqa: E402
from fashion_mnist_nets import MODULES  # noqa: E402

BUDGETS = (0.05, 0.10, 0.20, 0.30, 0.40)
RULES = ("threshold", "normalize", "sigmoid")
EXPLORES = (0.0, 0.1)
CLIPS = (None, 1.0)
SEEDS = (0, 1, 2)
DATA_SEED = 0
# The collapse, followed over a longer training at the smallest budget (seed 0).
COLLAPSE_BUDGET = 0.05
COLLAPSE_EPOCHS = (5, 10, 20, 40)
COLLAPSE_CONFIGS = (
    ("normalize", 0.0, None),
    ("normalize", 0.0, 1.0),
    ("normalize", 0.0, 0.0),
    ("threshold", 0.1, None),
    ("threshold", 0.1, 1.0),
    ("threshold", 0.1, 0.0),
)


class TestAccuracy(Callback):
    """Records the test accuracy after every epoch (history key ``test_acc``)."""

    def __init__(self, X, y):
        self.X = X
        self.y = y

    def on_epoch_end(self, net, **kwargs):
        net.history.record("test_acc", float(np.mean(net.predict(self.X) == self.y)))


def make_net(args, clip=None, epochs=None, callbacks=None):
    """The downstream network every method trains."""
    return ACTNeuralNetClassifier(
        MODULES[args.module],
        clip=clip,
        spread_to_neighbors=not args.cut,
        callbacks=callbacks,
        optimizer=torch.optim.Adam,
        lr=args.lr,
        max_epochs=epochs or args.epochs,
        batch_size=args.batch_size,
        train_split=None,
        device=args.device,
    )


def configurations(clips=CLIPS):
    """(rule, explore, clip); threshold without explore has pi in {0, 1}, where clip changes nothing."""
    return [
        (rule, explore, clip)
        for rule in RULES
        for explore in EXPLORES
        for clip in clips
        if not (rule == "threshold" and explore == 0 and clip is not None)
    ]


def _run(data, args, budget, config, seed, epochs=None):
    """One training run; ``config`` is "human", "machine" or (rule, explore, clip).

    ``epochs`` (the collapse runs) trains longer and records the test accuracy per epoch.
    """
    torch.set_num_threads(args.threads)
    torch.manual_seed(seed)
    # joblib hands workers read-only memory maps, which torch warns about: copy once
    data = {key: np.require(value, requirements="W") for key, value in data.items()}
    start = time.perf_counter()
    max_weight = 1.0
    if config in ("human", "machine"):
        net = make_net(args)
        net.fit(data["X_pool"], data["y_pool"] if config == "human" else data["machine_labels"])
    else:
        rule, explore, clip = config
        sampler = ACTSampler(budget=budget, rule=rule, explore=explore, random_state=seed)
        callbacks = [("test_acc", TestAccuracy(data["X_test"], data["y_test"]))] if epochs else None
        act = ACTClassifier(make_net(args, clip, epochs, callbacks), sampler=sampler)
        act.fit(
            data["X_pool"],
            data["y_pool"],
            machine_labels=data["machine_labels"],
            error_proba=data["error_proba"],
        )
        net = act.estimator_
        max_weight = float(np.max(1.0 / act.inclusion_proba_[act.reviewed_]))
    losses = np.asarray(net.history[:, "train_loss"], dtype=float)
    return dict(
        budget=budget,
        config=config,
        seed=seed,
        test_accuracy=float(net.score(data["X_test"], data["y_test"])),
        final_loss=float(losses[-1]),
        min_loss=float(np.nanmin(losses)) if np.isfinite(losses).any() else float("nan"),
        max_weight=max_weight,
        losses=losses,
        test_by_epoch=np.asarray(net.history[:, "test_acc"]) if epochs else None,
        seconds=time.perf_counter() - start,
    )


def _config_name(config):
    if isinstance(config, str):
        return f"full {config}"
    rule, explore, clip = config
    return f"{rule}, explore={explore:g}, " + ("exact loss" if clip is None else f"clip={clip:g}")


def _protected(config):
    """Configurations the stability target covers: explore > 0 or clip set."""
    return not isinstance(config, str) and (config[1] > 0 or config[2] is not None)


def _cells(runs, budget, config):
    chosen = [r for r in runs if r["config"] == config and r["budget"] in (budget, None)]
    return np.array([r["test_accuracy"] for r in chosen]), chosen


def _table_head(columns):
    return ["| method | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]


def collapse_report(runs):
    """Test accuracy and training loss over a long training, unprotected and clipped."""
    lines = [
        "",
        f"## The collapse, over {COLLAPSE_EPOCHS[-1]} epochs (budget {COLLAPSE_BUDGET:.0%}, seed 0)",
        "",
        "Test accuracy (training ACT loss) after each number of epochs.",
        "",
        *_table_head([f"epoch {e}" for e in COLLAPSE_EPOCHS]),
    ]
    for run in runs:
        cells = [
            f"{run['test_by_epoch'][e - 1]:.2%} ({run['losses'][e - 1]:.3g})" for e in COLLAPSE_EPOCHS
        ]
        lines.append(f"| {_config_name(run['config'])} | " + " | ".join(cells) + " |")
    return lines


def report(runs, args, budgets, task_note, command, wall):
    human, _ = _cells(runs, None, "human")
    machine, _ = _cells(runs, None, "machine")
    lines = [
        f"# ACTNeuralNetClassifier stability on Fashion-MNIST ({args.module}, {args.device})",
        "",
        f"Command: `{command}`",
        "",
        f"- {task_note}",
        f"- downstream: `{MODULES[args.module].__name__}` through ACTNeuralNetClassifier, "
        f"Adam lr={args.lr:g}, {args.epochs} epochs, batch {args.batch_size}, no validation "
        f"split; seeds {list(args.seeds)} (review draw and network initialisation); power 1; a clip "
        f"{'cuts the negative weights' if args.cut else 'spreads the negative weights onto neighbours'}",
        f"- references (test accuracy, mean ± std over seeds): full human **{human.mean():.2%} "
        f"± {human.std():.2%}**, full machine **{machine.mean():.2%} ± {machine.std():.2%}**",
        "",
        "Test accuracy, mean ± std over seeds; ▼ marks a mean below full machine.",
        "",
        *_table_head([f"{b:.0%}" for b in budgets]),
    ]
    failures, worst_seed_failures = [], []
    for config in configurations(args.clips):
        cells = []
        for budget in budgets:
            accuracy, _ = _cells(runs, budget, config)
            below = accuracy.mean() < machine.mean()
            cells.append(f"{accuracy.mean():.2%} ± {accuracy.std():.2%}" + (" ▼" if below else ""))
            if _protected(config) and below:
                failures.append((budget, config, accuracy.mean()))
            if _protected(config) and accuracy.min() < machine.mean():
                worst_seed_failures.append((budget, config, accuracy.min()))
        lines.append(f"| {_config_name(config)} | " + " | ".join(cells) + " |")

    lines += [
        "",
        "What the loss did: lowest training loss over the epochs (min over seeds) and the "
        "largest ACT weight 1/π of a reviewed item. Cross-entropy is never negative; a "
        "negative ACT loss means the network is earning loss by pushing reviewed items' "
        "machine-label logits down (the collapse).",
        "",
        *_table_head([f"{b:.0%}" for b in budgets]),
    ]
    for config in configurations(args.clips):
        cells = []
        for budget in budgets:
            _, chosen = _cells(runs, budget, config)
            min_loss = min(r["min_loss"] for r in chosen)
            max_weight = max(r["max_weight"] for r in chosen)
            cells.append(f"{min_loss:.3g} (1/π ≤ {max_weight:.3g})")
        lines.append(f"| {_config_name(config)} | " + " | ".join(cells) + " |")

    lines += ["", "## Target", ""]
    groups = [
        ("explore > 0, exact loss", lambda c: c[1] > 0 and c[2] is None),
        ("clip set (any rule, any explore)", lambda c: c[2] is not None),
    ]
    for title, member in groups:
        n_cells = sum(_protected(c) and member(c) for c in configurations(args.clips)) * len(budgets)
        below = [f for f in failures if member(f[1])]
        worst = [f for f in worst_seed_failures if member(f[1])]
        verdict = "MET" if not below else "NOT MET"
        lines.append(
            f"- {title}: {len(below)} of {n_cells} (configuration, budget) cells below "
            f"full-machine accuracy ({machine.mean():.2%}) in mean test accuracy, budgets "
            f"{budgets[0]:.0%} to {budgets[-1]:.0%} -> **{verdict}**; single seeds below it: "
            f"{len(worst)} cells."
        )
        lines += [f"    - {b:.0%}, {_config_name(c)}: mean {a:.2%}" for b, c, a in below]
    total = sum(r["seconds"] for r in runs)
    lines += [
        "",
        f"{len(runs)} sweep trainings, {total:.0f} s of worker time; wall time"
        f"{'' if args.skip_collapse else ' with the collapse runs'} {wall:.0f} s "
        f"({args.n_jobs} parallel jobs, {args.threads} torch thread(s) each).",
        "",
    ]
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="5000-item pool, one seed, 3 epochs, 2 budgets")
    parser.add_argument("--pool-size", type=int, default=20000, help="items annotated (default 20000)")
    parser.add_argument("--module", choices=sorted(MODULES), default="mlp")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    parser.add_argument("--n-jobs", type=int, default=2, help="parallel trainings (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per training (default 1)")
    parser.add_argument("--output", metavar="FILE.md", help="also write the report here")
    parser.add_argument("--clips", type=lambda v: None if v == "none" else float(v), nargs="+", default=list(CLIPS),
                        help="clips of the sweep ('none': the exact loss; default: none 1)")
    parser.add_argument("--cut", action="store_true",
                        help="cut the negative weights at -clip instead of spreading them onto neighbours")
    parser.add_argument("--skip-collapse", action="store_true", help="leave out the 40-epoch collapse runs")
    args = parser.parse_args(argv)
    command = "python benchmarks/torch_stability.py" + "".join(
        f" {a}" for a in (argv if argv is not None else sys.argv[1:])
    )
    budgets = BUDGETS
    if args.quick:
        args.pool_size, args.seeds, args.epochs, budgets = 5000, [0], 3, (0.10, 0.30)
    start = time.perf_counter()

    task = fashion_mnist_task(random_state=DATA_SEED, pool_size=args.pool_size, n_components=None)
    data = dict(
        X_pool=task.X_pool.astype(np.float32),
        y_pool=task.y_pool,
        machine_labels=task.machine_labels,
        error_proba=task.error_proba,
        X_test=task.X_test.astype(np.float32),
        y_test=task.y_test,
    )
    machine_accuracy = float(np.mean(task.machine_labels == task.y_pool))
    task_note = (
        f"pool: {task.y_pool.size} Fashion-MNIST train images (standardized pixels), test: "
        f"the official {task.y_test.size}; machine-label accuracy {machine_accuracy:.2%}"
    )
    jobs = [(None, reference, seed) for reference in ("human", "machine") for seed in args.seeds]
    jobs += [(b, c, s) for b in budgets for c in configurations(args.clips) for s in args.seeds]
    runs = Parallel(n_jobs=args.n_jobs)(delayed(_run)(data, args, *job) for job in jobs)
    collapse = []
    if not (args.quick or args.skip_collapse):
        collapse = Parallel(n_jobs=args.n_jobs)(
            delayed(_run)(data, args, COLLAPSE_BUDGET, config, 0, COLLAPSE_EPOCHS[-1])
            for config in COLLAPSE_CONFIGS
        )
    lines = report(runs, args, budgets, task_note, command, time.perf_counter() - start)
    lines += collapse_report(collapse) if collapse else []
    text = "\n".join(lines)
    print(text)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
