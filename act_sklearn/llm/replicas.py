"""Several replicas of one model: least outstanding requests first, a failing replica out for a while.

``LLMBackend(base_url=[...])`` names servers that serve the same model (vLLM or
llama.cpp replicas). Each request goes to the replica with the fewest requests
in flight, so a fast replica gets more and a replica whose slots are full gets
none until one frees. A replica that refuses a connection, or fails
``EJECT_AFTER`` requests in a row, is taken out for ``COOLDOWN`` seconds,
doubled at each new ejection up to ``MAX_COOLDOWN``; after that it gets
requests again, and one success puts it fully back. When every replica is out,
the one due back first is used, so requests keep their own retries and never
wait on the pool.
"""

import time
from dataclasses import dataclass

EJECT_AFTER = 3  # failed requests in a row that take a replica out
COOLDOWN = 1.0  # seconds out after the first ejection
MAX_COOLDOWN = 60.0


@dataclass
class Replica:
    """One server of the pool and what the client knows of its health."""

    url: str
    index: int
    outstanding: int = 0
    failures_in_a_row: int = 0
    ejections: int = 0  # ejections since the last success
    out_until: float = 0.0
    answered: int = 0


class ReplicaPool:
    """Chooses the replica for each request; ``clock`` is a monotonic time function (tests pass their own)."""

    def __init__(self, urls, clock=time.monotonic):
        self.replicas = [Replica(url, index) for index, url in enumerate(urls)]
        self.clock = clock
        self._next = 0  # rotates ties, so equal replicas share the load

    def acquire(self):
        """The replica for the next request (its outstanding count is raised; call :meth:`release`)."""
        now = self.clock()
        healthy = [r for r in self.replicas if r.out_until <= now]
        candidates = healthy or [min(self.replicas, key=lambda r: r.out_until)]
        n = len(self.replicas)
        replica = min(candidates, key=lambda r: (r.outstanding, (r.index - self._next) % n))
        self._next = (replica.index + 1) % n
        replica.outstanding += 1
        return replica

    def release(self, replica, ok, refused=False):
        """Record how a request to ``replica`` ended: ``ok``, or failed (``refused``: not even connected)."""
        replica.outstanding -= 1
        if ok:
            replica.answered += 1
            replica.failures_in_a_row = replica.ejections = 0
            replica.out_until = 0.0
            return
        replica.failures_in_a_row += 1
        if len(self.replicas) > 1 and (refused or replica.failures_in_a_row >= EJECT_AFTER):
            replica.out_until = self.clock() + min(COOLDOWN * 2**replica.ejections, MAX_COOLDOWN)
            replica.ejections += 1
            replica.failures_in_a_row = 0

    def another_available(self, replica):
        """Whether a replica other than ``replica`` is in (then a retry need not wait)."""
        now = self.clock()
        return any(r is not replica and r.out_until <= now for r in self.replicas)
