"""The scikit-llm half of the annotation throughput benchmark.

scikit-llm pins ``openai<2`` (we use openai 3.x), so it runs in its own virtual
environment, ``.venv-skllm`` at the repository root, made by
:func:`ensure_skllm_venv`.  Its full dependency set (google-cloud-aiplatform
and friends, about 60 packages) contains no torch and no CUDA packages, so it
is installed as scikit-llm declares it; the installer checks that this stays
true.

From the main environment::

    python = ensure_skllm_venv()
    result = run_skllm(python, base_url, n_items=2000, labels=["a", "b"], num_workers=32)

Inside the venv (what :func:`run_skllm` runs)::

    .venv-skllm/bin/python benchmarks/skllm_side.py --base-url http://127.0.0.1:8765/v1 \\
        --n-items 2000 --labels positive,negative,neutral --num-workers 32

prints one JSON line ``{"items", "seconds", "items_per_s", "num_workers",
"version", "connections"}``.

How scikit-llm 1.4.3 is pointed at the server (read from its source):
``model="custom_url::<name>"`` plus ``SKLLMConfig.set_gpt_url(base_url)``
(``skllm/llm/gpt/completion.py: get_chat_completion``); a key must be set
(``skllm/llm/gpt/mixin.py: GPTMixin._get_openai_key``) even though the server
ignores it.  With ``custom_url`` it sends no ``response_format``
(``skllm/llm/gpt/clients/openai/completion.py: get_chat_completion`` adds
``json_object`` only for the ``openai`` api) and parses ``{"label": ...}`` from
the reply text (``GPTClassifierMixin._extract_out_label`` ->
``skllm/utils: extract_json_key``).  It builds a new ``openai.OpenAI`` client,
hence a new TCP connection, for every item
(``skllm/llm/gpt/clients/openai/credentials.py: set_credentials``), and
``predict(X, num_workers=K)`` maps items over a ``ThreadPoolExecutor``
(``skllm/models/_base/classifier.py: BaseClassifier.predict``).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import random
import subprocess
import sys
import time
import warnings
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
# Pinned: the custom-URL mechanism and the prompt format below were read from this version.
SKLLM_REQUIREMENT = "scikit-llm==1.4.3"
FORBIDDEN_PREFIXES = ("torch", "nvidia-", "triton")  # must not come in with scikit-llm
FAILED = "__skllm_failed__"  # default_label: makes parse failures visible instead of random labels

WORDS = ("service", "delivery", "price", "quality", "support", "refund", "screen", "battery",
         "great", "slow", "broken", "friendly", "late", "cheap", "excellent", "terrible",
         "would", "buy", "again", "never", "recommend", "package", "arrived", "today")


def make_items(n_items: int, seed: int = 0) -> list[str]:
    """``n_items`` deterministic, distinct short texts (same on both sides of the benchmark)."""
    rng = random.Random(seed)
    return [f"Item {i}: " + " ".join(rng.choice(WORDS) for _ in range(12)) + "."
            for i in range(n_items)]


# ---------------------------------------------------------------------------
# Main environment: the venv and running the script in it
# ---------------------------------------------------------------------------

def venv_python(venv: Path) -> Path:
    """The interpreter of a virtual environment (POSIX or Windows layout)."""
    posix = venv / "bin" / "python"
    return posix if posix.exists() or os.name != "nt" else venv / "Scripts" / "python.exe"


def skllm_installed(python: Path) -> bool:
    """Whether ``python`` exists and has the pinned scikit-llm."""
    if not python.exists():
        return False
    version = SKLLM_REQUIREMENT.split("==")[1]
    probe = ("import importlib.metadata as m, sys; "
             f"sys.exit(m.version('scikit-llm') != {version!r})")
    return subprocess.run([str(python), "-c", probe], capture_output=True).returncode == 0


def forbidden_packages(python: Path) -> list[str]:
    """Installed distributions in the venv whose names start with :data:`FORBIDDEN_PREFIXES`."""
    probe = ("import importlib.metadata as m; "
             "print('\\n'.join(d.metadata['Name'] for d in m.distributions()))")
    names = subprocess.run([str(python), "-c", probe], capture_output=True, text=True,
                           check=True).stdout.split()
    return sorted(n for n in names if n.lower().startswith(FORBIDDEN_PREFIXES))


def ensure_skllm_venv(path: str | os.PathLike = ".venv-skllm") -> str:
    """Create the scikit-llm venv if needed; return its Python executable.

    ``path`` is relative to the repository root.  Installing takes about a
    minute (pip resolves ~60 packages); later calls only check the version.
    Raises ``RuntimeError`` if torch or CUDA packages ended up in the venv.
    """
    venv = Path(path) if Path(path).is_absolute() else REPO_ROOT / path
    python = venv_python(venv)
    if skllm_installed(python):
        return str(python)
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        python = venv_python(venv)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", SKLLM_REQUIREMENT], check=True)
    unwanted = forbidden_packages(python)
    if unwanted:
        raise RuntimeError(f"{SKLLM_REQUIREMENT} pulled {unwanted} into {venv}; "
                           "install it with --no-deps plus its light dependencies instead.")
    return str(python)


def run_skllm(python: str, base_url: str, n_items: int, labels: list[str], num_workers: int,
              timeout: float = 3600) -> dict:
    """Run this file's script mode with ``python`` (the venv's); return its JSON result."""
    command = [python, __file__, "--base-url", base_url, "--n-items", str(n_items),
               "--labels", ",".join(labels), "--num-workers", str(num_workers)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"scikit-llm run failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------
# Inside the venv: the measurement
# ---------------------------------------------------------------------------

def is_loopback(host) -> bool:
    """Whether ``host`` (an address or name) is a loopback address."""
    if host in ("localhost", "localhost.", b"localhost"):
        return True
    try:
        return ipaddress.ip_address(host if isinstance(host, str) else host.decode()).is_loopback
    except ValueError:
        return False


def watch_network() -> dict:
    """Record every ``connect`` and name lookup of this process (via an audit hook).

    Returns the live record ``{"connections": int, "foreign": [...]}``; anything
    in ``foreign`` went somewhere other than loopback.
    """
    record = {"connections": 0, "foreign": []}

    def hook(event, args):
        if event == "socket.connect":
            address = args[1]
            if isinstance(address, tuple):  # AF_INET/AF_INET6; AF_UNIX paths are local
                record["connections"] += 1
                if not is_loopback(address[0]):
                    record["foreign"].append(f"connect {address}")
        elif event == "socket.getaddrinfo" and args[0] is not None and not is_loopback(args[0]):
            record["foreign"].append(f"getaddrinfo {args[0]!r}")

    sys.addaudithook(hook)
    return record


def make_classifier(base_url: str, labels: list[str]):
    """scikit-llm's ZeroShotGPTClassifier pointed at ``base_url`` and fitted on ``labels``."""
    from skllm.config import SKLLMConfig
    from skllm.models.gpt.classification.zero_shot import ZeroShotGPTClassifier

    SKLLMConfig.set_gpt_url(base_url)
    SKLLMConfig.set_openai_key("dummy-key")  # required by scikit-llm, ignored by the server
    SKLLMConfig.set_openai_org("")
    clf = ZeroShotGPTClassifier(model="custom_url::delay-model", default_label=FAILED)
    return clf.fit(None, labels)


def measure(base_url: str, n_items: int, labels: list[str], num_workers: int) -> dict:
    """Time ``predict`` on ``n_items`` items; check labels and that traffic stayed on loopback."""
    import skllm

    network = watch_network()
    clf = make_classifier(base_url, labels)
    X = make_items(n_items)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Passing num_workers to predict is temporary ..."
        start = time.perf_counter()
        predictions = clf.predict(X, num_workers=num_workers)
        seconds = time.perf_counter() - start
    bad = [p for p in predictions if p not in labels]
    if bad:
        raise SystemExit(f"{len(bad)} of {n_items} predictions outside {labels}, e.g. {bad[:3]}")
    if network["foreign"]:
        raise SystemExit(f"non-loopback network use: {network['foreign'][:5]}")
    return {"items": n_items, "seconds": round(seconds, 4), "items_per_s": round(n_items / seconds, 2),
            "num_workers": num_workers, "version": skllm.__version__,
            "connections": network["connections"]}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Time scikit-llm's ZeroShotGPTClassifier.predict "
                                                 "against an OpenAI-compatible server.")
    parser.add_argument("--base-url", required=True, help="e.g. http://127.0.0.1:8765/v1")
    parser.add_argument("--n-items", type=int, default=2000)
    parser.add_argument("--labels", default="positive,negative,neutral", help="comma-separated")
    parser.add_argument("--num-workers", type=int, default=1)
    args = parser.parse_args(argv)
    # Progress bars are cosmetic; keep stderr quiet (tqdm reads TQDM_* defaults from the
    # environment at import time, so set this before scikit-llm imports it).
    os.environ.setdefault("TQDM_DISABLE", "1")
    labels = [label.strip() for label in args.labels.split(",") if label.strip()]
    print(json.dumps(measure(args.base_url, args.n_items, labels, args.num_workers)), flush=True)


if __name__ == "__main__":
    main()
