"""Annotation throughput: MLLMAnnotator against a fixed-delay server, and scikit-llm on the same.

A loopback OpenAI-compatible server (``delay_server.py``, in its own process)
answers every request ``--delay`` seconds after it arrives, so at concurrency K
no client can beat K / delay items per second; what a client reaches shows how
well it overlaps requests and how much time it spends itself.

One run measures:

1. MLLMAnnotator.predict at each ``--concurrency`` K (``LLMBackend.max_concurrency``)
   on ``--n-items`` items (``--small-n-items`` at K=1, where the full set would
   take minutes), each with a fresh cache file; wall time, items/s, the bound
   K/delay and the fraction of it reached, and the requests that reached the server
   (must equal the items: one json_schema request with logprobs per item);
   the client's CPU time per item (``time.process_time`` over ``predict``: the
   whole client, cache and parsing included);
2. the K=32 annotation again on the same cache file (target: 0 requests);
3. scikit-llm's ZeroShotGPTClassifier (``skllm_side.py``, own venv) on the same
   items and server at ``--skllm-workers``, and our multiple over it at equal
   concurrency;
4. replicas: two more server processes that each work on at most
   ``--replica-slots`` requests at a time (as llama.cpp's slots do), annotated
   at K=32 through one of them and through both (``base_url=[a, b]``);
5. if MLLMAnnotator misses 90% of the bound at K=32: a cProfile of one more K=32
   run, grouped by component (``--no-profile`` skips it).

Targets: >= 90% of the bound at concurrency 32 and >= 60% at 128; two replicas
at least 1.8 times one replica's items/s; 0 requests on the cached re-run. The
multiple over scikit-llm is reported at each K (no target: a multiple above
bound / scikit-llm is impossible, so the bound is the target). The report is
printed and written to ``benchmarks/results/throughput.md``.

Reproduce with: python benchmarks/throughput.py
"""

from __future__ import annotations

import argparse
import cProfile
import importlib.metadata
import os
import platform
import pstats
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # delay_server and skllm_side sit next to this file

from delay_server import ServerProcess, request_count, reset_count, serve_in_process  # noqa: E402
from skllm_side import ensure_skllm_venv, make_items, run_skllm  # noqa: E402

from act_sklearn import LLMBackend, MLLMAnnotator  # noqa: E402

LABELS = ["positive", "negative", "neutral"]
INSTRUCTIONS = "Classify the sentiment of the customer review."
MODEL = "bench"
TIMEOUT = 30.0
TARGET_K = 32
TARGET_FRACTION = 0.90
TARGETS = {32: 0.90, 128: 0.60}  # concurrency: fraction of the bound to reach
TARGET_REPLICA_GAIN = 1.8
WARMUP_ITEMS = 8
RESULTS = HERE / "results" / "throughput.md"

# cProfile self time is summed into these components, first match wins: (name, path or
# function-name fragments).  Built-in functions are matched by their name.
COMPONENTS = [
    ("(idle: event loop waiting for the server in epoll)", ("'poll' of 'select.epoll",)),
    ("act_sklearn: lean HTTP/1.1 client", ("act_sklearn/llm/http",)),
    ("openai: request-params transform (_utils/_transform.py)", ("openai/_utils/_transform",)),
    ("openai: rest of the SDK (client, options, response)", ("site-packages/openai/",)),
    ("httpcore2: connection pool", ("httpcore2/_async/connection_pool",)),
    ("httpcore2 + h11: HTTP/1.1", ("httpcore2/", "site-packages/h11/")),
    ("httpx2: client, models, URLs", ("site-packages/httpx2/",)),
    ("anyio + sniffio", ("site-packages/anyio/", "site-packages/sniffio/")),
    ("pydantic", ("pydantic",)),
    ("sqlite3 (response cache)", ("sqlite3", "act_sklearn/llm/cache")),
    ("act_sklearn: runner", ("act_sklearn/llm/runner",)),
    ("act_sklearn: requests, parsing, annotator", ("act_sklearn/",)),
    ("json", ("json/", "_json")),
    ("asyncio event loop + sockets", ("asyncio/", "selectors", "socket", "select", "epoll")),
]
# Files of generic helpers: their time is charged to the component that called them.
HELPER_FILES = ("/typing.py", "typing_extensions", "/contextlib.py", "/copy.py", "/abc.py",
                "/functools.py", "/enum.py", "/re/", "/inspect.py", "/weakref", "/_weakrefset")
# Functions whose cumulative time answers "what does this part cost".
KEY_FUNCTIONS = [
    ("runner._Endpoint.post (one request: HTTP and JSON)", "act_sklearn/llm/runner.py", "post"),
    ("  HostConnections.post (the lean HTTP/1.1 client)", "act_sklearn/llm/http.py", "post"),
    ("ResponseCache.put_many (one transaction per event-loop turn)", "act_sklearn/llm/cache.py", "put_many"),
    ("ResponseCache.get (lookups before sending)", "act_sklearn/llm/cache.py", "get"),
    ("request_key (SHA-256 of the canonical body)", "act_sklearn/llm/cache.py", "request_key"),
    ("MLLMAnnotator._request_chain (building bodies)", "act_sklearn/annotator.py", "_request_chain"),
    ("MLLMAnnotator._fill (parsing answers + logprobs)", "act_sklearn/annotator.py", "_fill"),
]


@dataclass
class Run:
    """One timed annotation run and what the server saw."""

    client: str
    concurrency: int
    n_items: int
    seconds: float
    server_requests: int
    delay: float
    note: str = ""
    ledger_requests: int | None = None
    cache_hits: int | None = None
    client_cpu: float | None = None  # seconds of the client process's CPU during the run

    @property
    def items_per_s(self) -> float:
        return self.n_items / self.seconds

    @property
    def bound(self) -> float:
        """Items/s if every request took exactly the server's delay and nothing else."""
        return self.concurrency / self.delay

    @property
    def fraction(self) -> float:
        return self.items_per_s / self.bound


# ---------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------

def make_annotator(base_url, concurrency: int, cache_path) -> MLLMAnnotator:
    """A fitted MLLMAnnotator on the benchmark server (``cache_path=False``: no cache)."""
    backend = LLMBackend(model=MODEL, base_url=base_url, max_concurrency=concurrency,
                         cache_path=cache_path, timeout=TIMEOUT)
    return MLLMAnnotator(backend, classes=LABELS, instructions=INSTRUCTIONS).fit()


def warm_up(base_url) -> None:
    """Import openai/httpx2 and open a first client outside the timed runs (one-time costs)."""
    make_annotator(base_url, 4, False).predict(make_items(WARMUP_ITEMS, seed=12345))


def annotate(base_url, items: list[str], concurrency: int, cache_path, delay: float,
             note: str = "") -> Run:
    """Time ``predict`` on ``items``; check the labels and the request counts (``base_url`` may list replicas)."""
    annotator = make_annotator(base_url, concurrency, cache_path)
    urls = base_url if isinstance(base_url, list) else [base_url]
    for url in urls:
        reset_count(url)
    start, cpu = time.perf_counter(), time.process_time()
    labels = annotator.predict(items)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    bad = [label for label in labels if label not in LABELS]
    if bad:
        raise RuntimeError(f"{len(bad)} labels outside {LABELS}, e.g. {bad[:3]}")
    usage = annotator.usage_
    if usage.failures:
        raise RuntimeError(f"{usage.failures} items failed: {usage}")
    return Run("MLLMAnnotator", concurrency, len(items), seconds, sum(request_count(url) for url in urls), delay,
               note, usage.requests, usage.cache_hits, cpu)


def check_one_request_per_item(run: Run) -> None:
    """A fresh-cache run must send exactly one request per item (no verbalized fallback)."""
    if run.server_requests != run.n_items or run.ledger_requests != run.n_items:
        raise RuntimeError(
            f"K={run.concurrency}: {run.n_items} items but the server saw {run.server_requests} "
            f"requests and the ledger counts {run.ledger_requests}: the benchmark would not "
            "measure one request per item (do the server's logprobs spell the content?)")


def annotation_runs(base_url: str, args, cache_dir: Path) -> tuple[list[Run], Run]:
    """Fresh-cache runs at every concurrency, then the cached re-run (same cache file)."""
    items = make_items(args.n_items)
    runs = []
    for k in args.concurrency:
        n_items = args.small_n_items if k == 1 else args.n_items
        note = f"{n_items} items (K=1 is slow)" if n_items != args.n_items else ""
        run = annotate(base_url, items[:n_items], k, cache_dir / f"k{k}.sqlite", args.delay, note)
        check_one_request_per_item(run)
        runs.append(run)
        print(f"  K={k}: {run.items_per_s:.1f} items/s ({run.fraction:.0%} of {run.bound:.0f})",
              flush=True)
    k = rerun_concurrency(args.concurrency)
    rerun = annotate(base_url, items, k, cache_dir / f"k{k}.sqlite", args.delay,
                     f"re-run on K={k}'s cache")
    print(f"  cached re-run: {rerun.server_requests} requests, {rerun.seconds:.2f} s", flush=True)
    return runs, rerun


def rerun_concurrency(concurrencies: list[int]) -> int:
    """The concurrency whose cache is re-used: 32 if measured, else the largest."""
    return TARGET_K if TARGET_K in concurrencies else max(concurrencies)


def replica_runs(args, cache_dir: Path) -> tuple[Run, Run]:
    """K=32 through one slot-limited replica, then through two (fresh caches, distinct items)."""
    servers = [ServerProcess(args.delay, slots=args.replica_slots) for _ in range(2)]
    try:
        urls = [server.url for server in servers]
        warm_up(urls)
        items = make_items(args.n_items, seed=7)
        note = f"{args.replica_slots} slots per replica"
        one = annotate(urls[0], items, TARGET_K, cache_dir / "replica1.sqlite", args.delay, "1 replica, " + note)
        two = annotate(urls, items, TARGET_K, cache_dir / "replica2.sqlite", args.delay, "2 replicas, " + note)
    finally:
        for server in servers:
            server.stop()
    for run in (one, two):
        check_one_request_per_item(run)
    print(f"  replicas: one {one.items_per_s:.1f} items/s, two {two.items_per_s:.1f} items/s "
          f"({two.items_per_s / one.items_per_s:.2f}x)", flush=True)
    return one, two


def skllm_runs(base_url: str, args) -> tuple[list[Run], dict]:
    """scikit-llm's zero-shot classifier at each worker count; also its versions."""
    python = ensure_skllm_venv()
    runs, version = [], ""
    for workers in args.skllm_workers:
        reset_count(base_url)
        n_items = args.small_n_items if workers == 1 else args.n_items  # as for MLLMAnnotator at K=1
        result = run_skllm(python, base_url, n_items, LABELS, workers)
        version = result["version"]
        run = Run("scikit-llm", workers, result["items"], result["seconds"],
                  request_count(base_url), args.delay, f"{result['connections']} TCP connections")
        runs.append(run)
        print(f"  scikit-llm, {workers} workers: {run.items_per_s:.1f} items/s", flush=True)
    return runs, {"scikit-llm": version, "openai (scikit-llm venv)": package_version_in(python, "openai")}


def profile_run(base_url: str, args, cache_dir: Path) -> tuple[float, pstats.Stats]:
    """cProfile one more fresh-cache annotation at K=32; returns its items/s and the stats."""
    items = make_items(args.n_items)
    annotator = make_annotator(base_url, TARGET_K, cache_dir / "profile.sqlite")
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    annotator.predict(items)
    profiler.disable()
    seconds = time.perf_counter() - start
    return len(items) / seconds, pstats.Stats(profiler)


# ---------------------------------------------------------------------------
# Profile summary
# ---------------------------------------------------------------------------

def component_of(filename: str, function: str) -> str:
    """The :data:`COMPONENTS` name for a profiled function (``"other"`` if none matches)."""
    where = function if filename == "~" else filename
    for name, fragments in COMPONENTS:
        if any(fragment in where for fragment in fragments):
            return name
    return "other"


def is_helper(key: tuple) -> bool:
    """Generic helpers (built-ins, typing, contextlib, ...) whose time belongs to their callers."""
    filename, _, function = key
    return component_of(filename, function) == "other" or any(
        fragment in filename for fragment in HELPER_FILES)


def component_shares(stats: dict, key: tuple, memo: dict, visiting: frozenset = frozenset()) -> dict:
    """How a function's self time splits over components: its own, or for a helper its
    callers' (recursively, weighted by the time each caller spent in it)."""
    if key in memo:
        return memo[key]
    callers = stats[key][4]
    if not is_helper(key) or not callers or key in visiting:
        shares = {component_of(key[0], key[2]): 1.0}
    else:
        spent = sum(timing[2] for timing in callers.values()) or 1.0
        shares = {}
        for caller, timing in callers.items():
            for name, share in component_shares(stats, caller, memo, visiting | {key}).items():
                shares[name] = shares.get(name, 0.0) + share * timing[2] / spent
    memo[key] = shares  # (a cycle through helpers is cut where it closes: an approximation)
    return shares


def self_time_by_component(stats: pstats.Stats) -> tuple[list[tuple[str, float]], float]:
    """Self (exclusive) time summed per component, largest first, and the total.

    The time of generic helpers (``isinstance``, ``typing.get_origin``, ...) goes to
    the components that called them (see :func:`component_shares`).
    """
    totals: dict[str, float] = {}
    memo: dict = {}
    for key, (_, _, tottime, _, _) in stats.stats.items():
        for name, share in component_shares(stats.stats, key, memo).items():
            totals[name] = totals.get(name, 0.0) + tottime * share
    return sorted(totals.items(), key=lambda kv: -kv[1]), sum(totals.values())


def cumulative_time(stats: pstats.Stats, path_fragment: str, function: str) -> float:
    """Cumulative time of the functions named ``function`` in files matching ``path_fragment``."""
    return sum(cumtime for (filename, _, name), (_, _, _, cumtime, _) in stats.stats.items()
               if name == function and path_fragment in filename)


def profile_section(items_per_s: float, stats: pstats.Stats) -> list[str]:
    """Markdown: where the client's time goes at K=32."""
    by_component, total = self_time_by_component(stats)
    lines = ["## Where the client's time goes at concurrency 32 (cProfile)", "",
             f"One more fresh-cache K={TARGET_K} run under cProfile ({items_per_s:.0f} items/s with "
             f"the profiler on, which slows Python code down); {total:.2f} s profiled in all. Shares "
             "are of that total. Self time of generic helpers (built-ins, typing, ...) is charged "
             "to the components calling them; cProfile inflates code made of many small Python "
             "calls (the openai SDK's transform) more than C code.",
             "", "| component (self time) | s | share |", "|---|---|---|"]
    lines += [f"| {name} | {seconds:.2f} | {seconds / total:.0%} |" for name, seconds in by_component]
    lines += ["", "| function (cumulative, includes callees) | s | share |", "|---|---|---|"]
    for label, path, function in KEY_FUNCTIONS:
        seconds = cumulative_time(stats, path, function)
        lines.append(f"| {label} | {seconds:.2f} | {seconds / total:.0%} |")
    return lines + [""]


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------

def package_version_in(python: str, package: str) -> str:
    """``package``'s version as seen by another interpreter (e.g. the scikit-llm venv)."""
    probe = f"import importlib.metadata as m; print(m.version({package!r}))"
    done = subprocess.run([python, "-c", probe], capture_output=True, text=True)
    return done.stdout.strip() or "?"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else :func:`platform.processor`."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> str:
    """The 1/5/15-minute load averages (how busy the machine was), or ``"?"``."""
    return " / ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"


def machine_facts(extra: dict) -> list[str]:
    """Markdown bullet lines about the machine and the package versions."""
    version = importlib.metadata.version
    facts = {
        "CPU": f"{os.cpu_count()} cores, {cpu_model()} ({platform.machine()})",
        "OS": platform.platform(),
        "Python": platform.python_version(),
        "openai": version("openai"),
        "httpx2": version("httpx2"),
        **extra,
    }
    return [f"- {name}: {value}" for name, value in facts.items()]


def command_line(args) -> str:
    """The full command, every option explicit."""
    def many(values):
        return " ".join(str(v) for v in values)

    command = (f"python benchmarks/throughput.py --n-items {args.n_items} --small-n-items "
               f"{args.small_n_items} --delay {args.delay} --concurrency {many(args.concurrency)} "
               f"--skllm-workers {many(args.skllm_workers)}")
    command += f" --replica-slots {args.replica_slots}"
    return command + (" --no-profile" if args.no_profile else "")


def results_table(runs: list[Run], rerun: Run, skllm: list[Run], skllm_version: str) -> list[str]:
    """Markdown table of every run."""
    lines = ["| client | concurrency K | items | wall (s) | items/s | bound K/delay (items/s) "
             "| % of bound | requests at server | client CPU per item (ms) | note |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for run in runs + [rerun] + skllm:
        client = f"scikit-llm {skllm_version} ZeroShotGPTClassifier" if run.client == "scikit-llm" \
            else "act_sklearn MLLMAnnotator"
        cached = run is rerun
        bound = "-" if cached else f"{run.bound:.0f}"
        fraction = "-" if cached else f"{run.fraction:.0%}"
        cpu = "-" if run.client_cpu is None else f"{run.client_cpu / run.n_items * 1e3:.2f}"
        lines.append(f"| {client} | {run.concurrency} | {run.n_items} | {run.seconds:.2f} | "
                     f"{run.items_per_s:.1f} | {bound} | {fraction} | {run.server_requests} | "
                     f"{cpu} | {run.note} |")
    return lines


def targets(runs: list[Run], rerun: Run, replicas) -> list[tuple[str, str, bool | None]]:
    """``(target, result, met)`` for every target; ``met`` is None when not measured."""
    rows = []
    for k, fraction in TARGETS.items():
        run = next((run for run in runs if run.concurrency == k), None)
        result = f"{run.fraction:.1%} ({run.items_per_s:.0f} of {run.bound:.0f} items/s)" if run else "not measured"
        rows.append((f">= {fraction:.0%} of the bound at concurrency {k}", result,
                     run.fraction >= fraction if run else None))
    if replicas:
        one, two = replicas
        gain = two.items_per_s / one.items_per_s
        rows.append((f"two replicas >= {TARGET_REPLICA_GAIN}x one at K={TARGET_K}",
                     f"{gain:.2f}x ({two.items_per_s:.0f} vs {one.items_per_s:.0f} items/s)",
                     gain >= TARGET_REPLICA_GAIN))
    rows.append(("0 requests on the cached re-run",
                 f"{rerun.server_requests} requests ({rerun.cache_hits} cache hits), {rerun.seconds:.2f} s",
                 rerun.server_requests == 0))
    return rows


def multiples(runs: list[Run], skllm: list[Run]) -> list[str]:
    """Markdown lines: our multiple over scikit-llm at each K, beside the most any client could reach."""
    ours = {run.concurrency: run for run in runs}
    lines = ["| K | act_sklearn items/s | scikit-llm items/s | multiple | most possible (bound / scikit-llm) |",
             "|---|---|---|---|---|"]
    for run in skllm:
        if run.concurrency in ours:
            mine = ours[run.concurrency]
            lines.append(f"| {run.concurrency} | {mine.items_per_s:.0f} | {run.items_per_s:.1f} | "
                         f"{mine.items_per_s / run.items_per_s:.1f}x | {run.bound / run.items_per_s:.1f}x |")
    return lines if len(lines) > 2 else []


def render_report(args, runs, rerun, skllm, facts, profile_lines, replicas=None) -> str:
    """The whole markdown report."""
    small = f" ({args.small_n_items} at K=1)" if 1 in args.concurrency else ""
    lines = [
        f"# Annotation throughput: MLLMAnnotator vs scikit-llm, {args.delay} s fixed-delay server", "",
        f"{args.n_items} distinct short texts{small}, labels {LABELS}. The server "
        "(`benchmarks/delay_server.py`, its own process, loopback) answers every request "
        f"{args.delay} s after it arrives, so concurrency K allows at most K/{args.delay} items/s. "
        "MLLMAnnotator (defaults: json_schema output, logprobs with top_logprobs=10) sends one "
        "request per item; each run has a fresh cache file and is checked to reach the server "
        "exactly once per item. Wall time is `predict` alone (imports warmed up once before).",
        "",
        *results_table(runs + list(replicas or ()), rerun, skllm, facts.get("scikit-llm", "")),
        "",
    ]
    if replicas:
        lines += [f"The replica rows use two more server processes that each work on at most "
                  f"{args.replica_slots} requests at a time (later ones queue, as at llama.cpp's slots); "
                  f"one replica's bound is then {args.replica_slots}/{args.delay} items/s whatever K.", ""]
    table = multiples(runs, skllm)
    if table:
        lines += ["Multiple over scikit-llm at equal concurrency:", "", *table, ""]
    lines += ["## Targets", "", "| target | result | met |", "|---|---|---|"]
    for target, result, met in targets(runs, rerun, replicas):
        lines.append(f"| {target} | {result} | {'n/a' if met is None else 'yes' if met else 'NO'} |")
    lines += ["", *profile_lines, "## Machine", "", *machine_facts(facts), "",
              "Reproduce (about 7 minutes; run nothing else heavy meanwhile):", "",
              f"    {command_line(args)}", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------

def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-items", type=int, default=2000, help="items per run")
    parser.add_argument("--small-n-items", type=int, default=200, help="items at concurrency 1")
    parser.add_argument("--delay", type=float, default=0.1, help="server delay in seconds")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 128],
                        help="MLLMAnnotator max_concurrency values")
    parser.add_argument("--replica-slots", type=int, default=16,
                        help="requests each replica server works on at once (0: skip the replica runs)")
    parser.add_argument("--skllm-workers", type=int, nargs="+", default=[1, 8, 32, 128],
                        help="scikit-llm num_workers values")
    parser.add_argument("--no-profile", action="store_true",
                        help="skip the cProfile run made when the K=32 target is missed")
    parser.add_argument("--output", type=Path, default=RESULTS, help="where to write the report")
    args = parser.parse_args(argv)
    if min(args.concurrency) < 1 or min(args.skllm_workers) < 1 or args.n_items < 1:
        parser.error("--concurrency, --skllm-workers and --n-items must be >= 1")
    args.small_n_items = min(args.small_n_items, args.n_items)
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    facts = {"load average (1/5/15 min) before the run": load_average()}
    with tempfile.TemporaryDirectory(prefix="throughput-") as tmp, \
            serve_in_process(args.delay) as base_url:
        cache_dir = Path(tmp)
        print(f"delay server at {base_url}; warming up", flush=True)
        warm_up(base_url)
        print("MLLMAnnotator:", flush=True)
        runs, rerun = annotation_runs(base_url, args, cache_dir)
        replicas = None
        if args.replica_slots:
            print("replicas:", flush=True)
            replicas = replica_runs(args, cache_dir)
        print("scikit-llm:", flush=True)
        skllm, versions = skllm_runs(base_url, args)
        facts.update(versions)
        at_target = [run for run in runs if run.concurrency == TARGET_K]
        profile_lines = []
        if at_target and at_target[0].fraction < TARGET_FRACTION and not args.no_profile:
            print(f"profiling a K={TARGET_K} run", flush=True)
            profile_lines = profile_section(*profile_run(base_url, args, cache_dir))
    report = render_report(args, runs, rerun, skllm, facts, profile_lines, replicas)
    print("\n" + report)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report)
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
