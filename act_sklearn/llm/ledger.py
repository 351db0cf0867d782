"""What a batch of LLM requests cost: requests, cache hits, tokens, dollars."""

from dataclasses import dataclass

BATCH_DISCOUNT = 0.5  # OpenAI's Batch API charges half the online price


@dataclass
class UsageLedger:
    """Running totals of LLM usage.

    ``requests`` counts HTTP requests sent (retries included), ``cache_hits``
    requests answered from the cache, ``retries`` repeated attempts after a
    transient failure, ``unusable`` answers that could not be read (each asked
    again, with more tokens or in the next output mode) and ``failures`` items
    that ended without a usable answer.

    Batch mode (``LLMBackend(mode="batch")``) counts apart: ``batch_requests``
    are the request lines submitted in batches (resubmissions included) and
    ``batch_prompt_tokens`` / ``batch_completion_tokens`` the tokens of their
    answers, priced at the batch price.
    """

    requests: int = 0
    cache_hits: int = 0
    retries: int = 0
    unusable: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    batch_requests: int = 0
    batch_prompt_tokens: int = 0
    batch_completion_tokens: int = 0

    def record_usage(self, usage, batch=False):
        """Add the ``usage`` block of a chat.completion response (answered in a batch if ``batch``)."""
        usage = usage or {}
        prefix = "batch_" if batch else ""
        for name in ("prompt_tokens", "completion_tokens"):
            setattr(self, prefix + name, getattr(self, prefix + name) + int(usage.get(name) or 0))

    def cost(self, prices):
        """Estimated dollars for ``prices = {"input": $/1M tokens, "output": $/1M tokens}``.

        Batch tokens are priced at ``prices["batch_input"]`` and
        ``prices["batch_output"]``, half the online prices when not given.
        """
        if not prices:
            return None
        online_in, online_out = float(prices.get("input", 0.0)), float(prices.get("output", 0.0))
        batch_in = float(prices.get("batch_input", online_in * BATCH_DISCOUNT))
        batch_out = float(prices.get("batch_output", online_out * BATCH_DISCOUNT))
        return (
            self.prompt_tokens * online_in
            + self.completion_tokens * online_out
            + self.batch_prompt_tokens * batch_in
            + self.batch_completion_tokens * batch_out
        ) / 1e6

    def add(self, other):
        """Add another ledger's totals to this one."""
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        return self
