"""Shared pytest fixtures."""

import os

import pytest


@pytest.fixture(scope="session")
def llama_server_url(tmp_path_factory):
    """Base URL (``http://127.0.0.1:PORT/v1``) of a real llama-server.

    The server runs a tiny random-weight model written for this session, so
    the tests need no download.  Without the binary the fixture skips, except
    on CI (``CI`` set), where a silently skipped integration test would hide
    a broken set-up, so it fails instead.
    """
    from llama_server import (
        INSTALL_HINT,
        find_llama_server,
        running_llama_server,
        write_tiny_gguf,
    )

    binary = find_llama_server()
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail(INSTALL_HINT)
        pytest.skip(INSTALL_HINT)
    model = write_tiny_gguf(tmp_path_factory.mktemp("llama") / "tiny.gguf")
    with running_llama_server(model, binary=binary) as url:
        yield url
