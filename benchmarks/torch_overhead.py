"""Time per epoch of the ACT loss against plain skorch cross-entropy, same module and data.

Run it with::

    python benchmarks/torch_overhead.py                 # under a minute on 2 CPU cores
    python benchmarks/torch_overhead.py --device cuda   # on a GPU

Three trainings of the same module (``--module``, default the 784-256-10 MLP of
``benchmarks/fashion_mnist_nets.py``) on the same Fashion-MNIST images, in
``--rounds`` interleaved rounds, timed by skorch's own per-epoch timer
(``history[:, "dur"]``):

* plain ``skorch.NeuralNetClassifier(criterion=torch.nn.CrossEntropyLoss)`` on labels;
* ``ACTNeuralNetClassifier`` on the same labels (class-index targets);
* ``ACTNeuralNetClassifier`` on the ACT design (signed soft targets; normalize
  rule, explore 0.1, 20% budget, the exact loss).

Target: the ACT loss costs at most 1.1 times plain cross-entropy per epoch.
The first epoch of each training is dropped (warm-up); the median over the
others is reported. A single training's ratio moved by up to 10% between runs
on this 2-core machine (noise: the label-path trainings run the same code).
"""

import argparse
import platform
import sys
from pathlib import Path

import numpy as np
import torch
from skorch import NeuralNetClassifier

from act_sklearn import ACTNeuralNetClassifier, ACTSampler
from act_sklearn.datasets import load_fashion_mnist
from act_sklearn.stats import act_weights

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fashion_mnist_nets import MODULES  # noqa: E402

TARGET_RATIO = 1.1


def fashion_mnist(n_samples, seed):
    """Standardized pixels, gold labels, and a machine labeller that errs 20% of the time."""
    X, y = load_fashion_mnist(subset="train", return_X_y=True)
    X, y = X[:n_samples], y[:n_samples]
    X = ((X - X.mean(axis=0)) / (X.std(axis=0) + 1e-3)).astype(np.float32)
    rng = np.random.default_rng(seed)
    wrong = rng.random(y.size) < 0.2
    machine = np.where(wrong, (y + rng.integers(1, 10, y.size)) % 10, y)
    error_proba = np.clip(0.4 * wrong + 0.6 * rng.random(y.size), 0, 1)
    return X, y, machine, error_proba


def epoch_seconds(net):
    """skorch's per-epoch times, the first (warm-up) epoch dropped."""
    durations = list(net.history[:, "dur"])
    return durations[1:] if len(durations) > 1 else durations


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-samples", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved runs of each training")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--module", choices=sorted(MODULES), default="mlp")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: with 2, any other load on a 2-core machine made "
        "every epoch ~25x slower through OpenMP waits, whichever loss)",
    )
    parser.add_argument("--output", metavar="FILE.md", help="also write the report here")
    args = parser.parse_args(argv)
    command = "python benchmarks/torch_overhead.py" + "".join(
        f" {a}" for a in (argv if argv is not None else sys.argv[1:])
    )
    torch.set_num_threads(args.threads)
    X, y, machine, error_proba = fashion_mnist(args.n_samples, seed=0)
    sampler = ACTSampler(budget=0.2, rule="normalize", explore=0.1, random_state=0).fit(error_proba)
    weights = act_weights(sampler.reviewed_, sampler.inclusion_proba_)
    common = dict(
        module=MODULES[args.module],
        optimizer=torch.optim.Adam,
        lr=1e-3,
        max_epochs=args.epochs,
        batch_size=args.batch_size,
        train_split=None,
        device=args.device,
        verbose=0,
    )

    trainings = {
        "skorch NeuralNetClassifier, CrossEntropyLoss, labels": lambda: NeuralNetClassifier(
            criterion=torch.nn.CrossEntropyLoss, **common
        ).fit(X, y),
        "ACTNeuralNetClassifier, labels": lambda: ACTNeuralNetClassifier(**common).fit(X, y),
        "ACTNeuralNetClassifier, ACT design (signed soft targets)": lambda: ACTNeuralNetClassifier(
            **common
        ).fit(X, np.where(sampler.reviewed_, y, -1), machine_labels=machine, act_weight=weights),
    }
    # Rounds interleave the three trainings so that a busy moment of the machine
    # does not land on one of them only.
    durations = {name: [] for name in trainings}
    for _ in range(args.rounds):
        for name, train in trainings.items():
            torch.manual_seed(0)
            durations[name] += epoch_seconds(train())
    timings = {name: float(np.median(values)) for name, values in durations.items()}

    baseline = next(iter(timings.values()))
    device = args.device
    if device.startswith("cuda") and torch.cuda.is_available():
        device = f"{device} ({torch.cuda.get_device_name()})"
    lines = [
        "# ACT loss overhead per epoch (ACTNeuralNetClassifier vs skorch cross-entropy)",
        "",
        f"Command: `{command}`",
        "",
        f"- data: {args.n_samples} Fashion-MNIST train images, standardized pixels; module "
        f"{MODULES[args.module].__name__}; Adam, batch {args.batch_size}, {args.epochs} epochs, "
        f"no validation split; {args.rounds} interleaved rounds of the three trainings",
        f"- device: {device}; torch {torch.__version__}, {torch.get_num_threads()} CPU thread(s); "
        f"{platform.processor() or platform.machine()}",
        "- seconds per epoch: median of skorch's epoch timer over all rounds, first epoch of "
        "each training dropped",
        "",
        "| training | s / epoch | ratio to plain skorch |",
        "|---|---:|---:|",
    ]
    lines += [f"| {name} | {t:.3f} | {t / baseline:.3f} |" for name, t in timings.items()]
    worst = max(timings.values()) / baseline
    verdict = "MET" if worst <= TARGET_RATIO else "NOT MET"
    lines += [
        "",
        f"Target: at most {TARGET_RATIO} x plain cross-entropy per epoch; largest ratio "
        f"{worst:.3f} -> **{verdict}**.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
