"""The ``act-sklearn`` command: one labelling job in a run folder, step by step.

Exit codes scripts can rely on:
  0  the step finished
  2  bad input: a file, a column, a label or a run folder that cannot be used
     (the message names it and the fix; the run folder is left as it was)
  3  some LLM requests failed; the answers that arrived are cached, so running
     the same command again pays only for the rest
  4  import finished, but some reviewers' answers conflict and were not taken
"""

import argparse
import sys
from pathlib import Path

from .review import ReviewFileError
from .run_folder import RunFolder, RunFolderError

EXIT_OK, EXIT_BAD_INPUT, EXIT_LLM_FAILED, EXIT_CONFLICTS = 0, 2, 3, 4


def _backend(args, prefix=""):
    from .llm import LLMBackend

    get = lambda name: getattr(args, prefix + name)  # noqa: E731
    return LLMBackend(
        model=get("model"),
        base_url=get("base_url"),
        api_key_env=get("api_key_env"),
        max_concurrency=args.max_concurrency,
        cache_path=str(args.run / "cache.sqlite"),
    )


def _open_run(args):
    """The run folder; ``annotate`` (and ``run``) create it from the input file."""
    if getattr(args, "input", None) is None:
        return RunFolder(args.run)
    from .review.items import read_items

    items = read_items(
        args.input,
        id_column=args.id_column,
        text_column=args.text_column,
        image_column=args.image_column,
        label_column=args.label_column,
    )
    classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    settings = dict(
        input=str(args.input),
        columns=dict(id=args.id_column, text=args.text_column, image=args.image_column, label=args.label_column),
        annotator=dict(model=args.model, base_url=args.base_url, instructions=args.instructions),
    )
    return RunFolder.create(args.run, items, classes=classes, settings=settings)


def cmd_annotate(args):
    from .annotator import MLLMAnnotator
    from .workflow import annotate

    run = _open_run(args)
    annotator = MLLMAnnotator(_backend(args), classes=run.classes(), instructions=args.instructions)
    labels = annotate(run, annotator)
    print(f"annotated {len(labels)} items -> {run.path / 'machine.csv'}")


def cmd_criticize(args):
    from .criticizer import MLLMCriticizer
    from .workflow import criticize

    run = RunFolder(args.run)
    backend = _backend(args, prefix="critic_" if args.critic_model else "")
    error_proba = criticize(run, MLLMCriticizer(backend, strategy=args.strategy, classes=run.classes()))
    print(f"criticized {error_proba.size} labels -> {run.path / 'criticism.csv'}")


def cmd_select(args):
    from .workflow import select

    sampler = select(
        RunFolder(args.run), budget=args.budget, rule=args.rule, explore=args.explore, random_state=args.seed
    )
    print(f"selected {int(sampler.reviewed_.sum())} items for review -> {args.run / 'selection.csv'}")


def cmd_export(args):
    from .workflow import export

    n_items = export(RunFolder(args.run), args.output, format=args.format, image_mode=args.image_mode)
    print(f"exported {n_items} items awaiting review -> {args.output}")


def cmd_import(args):
    from .workflow import import_reviews, selected_ids

    run = RunFolder(args.run)
    outcome = import_reviews(run, args.file)
    print(
        f"took {len(outcome.taken)} answers; {len(run.reviews())} of {len(selected_ids(run))} "
        "selected items reviewed"
    )
    for item_id, where in outcome.conflicts:
        print(f"conflict, not taken: item {item_id!r}: {where}", file=sys.stderr)
    return EXIT_CONFLICTS if outcome.conflicts else EXIT_OK


def cmd_train(args):
    from .workflow import train

    model = train(RunFolder(args.run))
    print(f"trained on {model.n_human_labels_} human labels -> {args.run / 'model.joblib'}")
    print(model.label_accuracy_)


def cmd_report(args):
    from .workflow import report

    run = RunFolder(args.run)
    report(run, confidence=args.confidence)
    print((run.path / "report.md").read_text(encoding="utf-8"))


def build_parser():
    parser = argparse.ArgumentParser(
        prog="act-sklearn",
        description="Label with an LLM, criticise the labels, have people review the most suspicious "
        "items within a budget, and train on the result. Each step reads and writes a run folder.",
        epilog=__doc__.split("\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    steps = parser.add_subparsers(dest="step", required=True, metavar="STEP")

    def step(name, help_text):
        sub = steps.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--run", type=Path, required=True, help="the run folder")
        return sub

    def llm_options(sub, prefix="", who="annotator"):
        dash = prefix.replace("_", "-")
        sub.add_argument(f"--{dash}model", default=None if prefix else "gpt-4o-mini", help=f"the {who}'s model")
        sub.add_argument(
            f"--{dash}base-url", default=None, help="an OpenAI-compatible endpoint (default: OpenAI)"
        )
        sub.add_argument(
            f"--{dash}api-key-env",
            default="OPENAI_API_KEY",
            help="the environment variable holding the key (the key itself is never stored)",
        )

    annotate_step = step("annotate", "label every item with an LLM (creates the run folder)")
    annotate_step.add_argument("--input", type=Path, required=True, help="items: .csv, .jsonl or .parquet")
    annotate_step.add_argument("--classes", required=True, help="the label set, comma-separated")
    annotate_step.add_argument("--id-column", help="unique item ids (default: row numbers)")
    annotate_step.add_argument("--text-column", help="the text to label")
    annotate_step.add_argument("--image-column", help="image paths (relative to the input file)")
    annotate_step.add_argument("--label-column", help="gold labels, for simulations (never sent to an LLM)")
    annotate_step.add_argument("--instructions", help="the task in a sentence")
    annotate_step.add_argument("--max-concurrency", type=int, default=8)
    llm_options(annotate_step)

    criticize_step = step("criticize", "estimate with an LLM how likely each machine label is wrong")
    criticize_step.add_argument("--strategy", choices=["naive", "cot", "devil", "logprob"], default="cot")
    criticize_step.add_argument("--max-concurrency", type=int, default=8)
    llm_options(criticize_step)
    llm_options(criticize_step, prefix="critic_", who="criticizer (default: the annotator's)")

    select_step = step("select", "choose the items people review, within the budget")
    select_step.add_argument("--budget", type=_budget, required=True, help="items (int) or a fraction in (0, 1]")
    select_step.add_argument("--rule", choices=["threshold", "normalize", "sigmoid"], default="threshold")
    select_step.add_argument("--explore", type=float, default=0.1, help="share of the budget drawn uniformly")
    select_step.add_argument("--seed", type=int, default=0)

    export_step = step("export", "write the items awaiting review for reviewers")
    export_step.add_argument("--output", type=Path, required=True)
    export_step.add_argument("--format", choices=["csv", "jsonl", "label-studio"], default="csv")
    export_step.add_argument("--image-mode", choices=["data-url", "local-files"], default="data-url")

    import_step = step("import", "bring reviewers' answers back (a sheet or a Label Studio export)")
    import_step.add_argument("file", type=Path)

    step("train", "train the downstream model on the corrected labels (text items)")

    report_step = step("report", "the final labels' estimated accuracy, errors found, reviews and LLM usage")
    report_step.add_argument("--confidence", type=float, default=0.9)
    return parser


def _budget(text):
    value = float(text)
    return int(value) if value.is_integer() and value > 1 else value


COMMANDS = {
    "annotate": cmd_annotate,
    "criticize": cmd_criticize,
    "select": cmd_select,
    "export": cmd_export,
    "import": cmd_import,
    "train": cmd_train,
    "report": cmd_report,
}


def main(argv=None):
    from ._llm_estimator import LLMBatchError

    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.step](args) or EXIT_OK
    except LLMBatchError as error:
        print(f"act-sklearn {args.step}: {error}\nRun the same command again to retry.", file=sys.stderr)
        return EXIT_LLM_FAILED
    except (ReviewFileError, RunFolderError, ValueError, OSError) as error:
        print(f"act-sklearn {args.step}: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
