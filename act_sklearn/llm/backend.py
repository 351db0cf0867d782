"""Where requests go: a clonable, picklable description of an OpenAI-compatible endpoint.

The spec holds the *name* of the environment variable with the API key, never the
key, and builds the ``openai`` client only when requests are made, so estimators
holding it clone, pickle and print without secrets.
"""

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

NO_KEY = "no-key"  # sent when the key variable is unset: local servers ignore it
MODES = ("online", "batch")
REPLICA_SCOPE = "replicas"  # the cache scope of a list of replicas: whichever answered


def default_cache_path():
    """``$XDG_CACHE_HOME/act-sklearn/responses.sqlite`` (``~/.cache`` by default)."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "act-sklearn" / "responses.sqlite"


@dataclass
class LLMBackend:
    """An OpenAI-compatible chat-completions endpoint and how to call it.

    Parameters
    ----------
    model : str, default="gpt-4o-mini"
        Model name sent with every request.
    base_url : str, list of str or None, default=None
        Endpoint, e.g. ``"http://127.0.0.1:8080/v1"``; None means OpenAI's. A
        list names replicas serving the same model (:mod:`~act_sklearn.llm.replicas`):
        each request goes to the one with the fewest requests in flight, and a
        replica that refuses connections or keeps failing is left out for a
        while. The response cache keys a list's answers by the model and the
        request alone, so any list of replicas (in any order, with members
        added or gone) reuses them; a single URL keys them by that URL.
    api_key_env : str, default="OPENAI_API_KEY"
        Name of the environment variable that holds the API key. The key is read
        when a request batch starts and is never stored.
    timeout : float, default=60.0
        Seconds before one request is abandoned (then retried).
    max_retries : int, default=5
        Retries of a request after a transient failure (429, 5xx, timeout,
        connection error), with exponential backoff that honours ``Retry-After``.
    max_concurrency : int, default=8
        Requests in flight at once.
    requests_per_minute, tokens_per_minute : float or None, default=None
        Client-side rate limits (None: unlimited). Tokens are estimated from the
        request size and ``max_tokens`` before sending.
    cache_path : str, Path, None or False, default=None
        SQLite response cache shared by processes; None means
        :func:`default_cache_path`, False disables caching.
    prices : dict or None, default=None
        ``{"input": dollars per million tokens, "output": ...}`` for the usage
        ledger's cost estimate; ``"batch_input"`` and ``"batch_output"`` price
        the tokens of batch mode (half the online prices when not given, as
        OpenAI's Batch API charges).
    mode : {"online", "batch"}, default="online"
        ``"online"`` sends chat completions one by one; ``"batch"`` sends the
        requests that have no usable cached answer through the OpenAI Batch API
        (:mod:`~act_sklearn.llm.batch`: JSONL files, ``/v1/batches``, a 24 h
        window, half price) and waits for the answers, which land in the same
        response cache. Batch ids are recorded in the cache file the moment
        they exist, so a killed process, started again, resumes polling the
        same batches and never submits a request twice. Needs the cache.
    batch_poll_interval : float, default=30.0
        Seconds between the first polls of a batch; the interval grows by half
        after each poll, up to 30 times this (15 minutes by default).
    http_transport : httpx2 transport or None, default=None
        Transport for the HTTP client (tests script one; proxies may need one).
    """

    model: str = "gpt-4o-mini"
    base_url: str | list | None = None
    api_key_env: str = "OPENAI_API_KEY"
    timeout: float = 60.0
    max_retries: int = 5
    max_concurrency: int = 8
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    cache_path: object = None
    prices: dict | None = None
    mode: str = "online"
    batch_poll_interval: float = 30.0
    http_transport: object = field(default=None, repr=False)

    def __post_init__(self):
        self.validate()

    def validate(self):
        """Raise ``ValueError`` naming the first bad setting."""
        if not isinstance(self.model, str) or not self.model:
            raise ValueError(f"model must be a non-empty string, got {self.model!r}.")
        if not isinstance(self.api_key_env, str) or not self.api_key_env.isidentifier():
            raise ValueError(
                "api_key_env is the NAME of the environment variable holding the key "
                f"(e.g. 'OPENAI_API_KEY'), got {self.api_key_env!r}; never pass the key itself."
            )
        if isinstance(self.base_url, (list, tuple)):
            if not self.base_url or not all(isinstance(url, str) and url for url in self.base_url):
                raise ValueError(f"base_url as a list names one or more replica URLs, got {self.base_url!r}.")
            if len(set(self.base_url)) < len(self.base_url):
                raise ValueError(f"base_url lists a replica twice: {self.base_url!r}.")
            if self.mode == "batch":
                raise ValueError("mode='batch' sends to one endpoint (the provider's Batch API); give one base_url.")
        elif self.base_url is not None and not (isinstance(self.base_url, str) and self.base_url):
            raise ValueError(f"base_url must be a URL, a list of replica URLs or None, got {self.base_url!r}.")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}.")
        if self.mode == "batch" and self.cache_path is False:
            raise ValueError("mode='batch' records its batch ids in the response cache; cache_path=False turns it off.")
        for name in ("timeout", "max_concurrency", "batch_poll_interval"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}.")
        if not (isinstance(self.max_retries, int) and self.max_retries >= 0):
            raise ValueError(f"max_retries must be an int >= 0, got {self.max_retries!r}.")
        for name in ("requests_per_minute", "tokens_per_minute"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0 or None, got {value!r}.")
        return self

    # scikit-learn's clone and set_params (e.g. ``annotator__backend__model``)
    def get_params(self, deep=True):
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def set_params(self, **params):
        for name, value in params.items():
            if name not in self.get_params():
                raise ValueError(f"LLMBackend has no parameter {name!r}.")
            setattr(self, name, value)
        return self.validate()

    @property
    def replicas(self):
        """The endpoints requests go to: a tuple of base URLs (None for OpenAI's)."""
        return tuple(self.base_url) if isinstance(self.base_url, (list, tuple)) else (self.base_url,)

    @property
    def cache_scope(self):
        """What, besides the request, keys the cache: the URL, or ``"replicas"`` for a list of them."""
        return REPLICA_SCOPE if isinstance(self.base_url, (list, tuple)) else self.base_url

    def resolved_cache_path(self):
        """The cache file, or None when caching is off."""
        if self.cache_path is False:
            return None
        return Path(self.cache_path) if self.cache_path is not None else default_cache_path()

    def make_http_client(self):
        """A fresh ``httpx2.AsyncClient`` for this endpoint (pooled, with the backend's transport and timeout)."""
        import httpx2

        return httpx2.AsyncClient(
            transport=self.http_transport,
            # enough pooled connections that the concurrency bound, not the pool, limits us
            limits=httpx2.Limits(
                max_connections=max(100, int(self.max_concurrency)),
                max_keepalive_connections=max(20, int(self.max_concurrency)),
            ),
            timeout=self.timeout,
        )

    def make_async_client(self, http_client=None, max_retries=0, base_url=None):
        """A fresh ``openai.AsyncOpenAI`` (over ``http_client``, else a new one), for ``base_url`` or the backend's.

        Chat-completion retries are the runner's, so the client's are off by
        default; the batch path lets the client retry its file and batch calls.
        """
        import openai

        return openai.AsyncOpenAI(
            api_key=os.environ.get(self.api_key_env) or NO_KEY,
            base_url=base_url or self.replicas[0],
            timeout=self.timeout,
            max_retries=max_retries,
            http_client=http_client or self.make_http_client(),
        )
