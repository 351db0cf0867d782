"""What a batch of LLM requests cost: requests, cache hits, tokens, dollars."""

from dataclasses import dataclass


@dataclass
class UsageLedger:
    """Running totals of LLM usage.

    ``requests`` counts HTTP requests sent (retries included), ``cache_hits``
    requests answered from the cache, ``retries`` repeated attempts after a
    transient failure, ``unusable`` answers that could not be read (each asked
    again, with more tokens or in the next output mode) and ``failures`` items
    that ended without a usable answer.
    """

    requests: int = 0
    cache_hits: int = 0
    retries: int = 0
    unusable: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def record_usage(self, usage):
        """Add the ``usage`` block of a chat.completion response."""
        usage = usage or {}
        self.prompt_tokens += int(usage.get("prompt_tokens") or 0)
        self.completion_tokens += int(usage.get("completion_tokens") or 0)

    def cost(self, prices):
        """Estimated dollars for ``prices = {"input": $/1M tokens, "output": $/1M tokens}``."""
        if not prices:
            return None
        return (
            self.prompt_tokens * float(prices.get("input", 0.0))
            + self.completion_tokens * float(prices.get("output", 0.0))
        ) / 1e6

    def add(self, other):
        """Add another ledger's totals to this one."""
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        return self
