"""Client-side load balancing over replicas of one model (several vLLM/SGLang servers).

Each request attempt picks a replica: the least-loaded healthy one (fewest requests in flight,
ties by rotation) or plain round robin. A replica that fails (connection error, timeout, 5xx) is
marked down for a cooldown that doubles with each consecutive failure (capped); after the
cooldown it gets one probe request (half-open), and a success makes it healthy again. If every
replica is down, the one whose cooldown ends first is used rather than failing outright: the
caller's retries and backoff decide when to give up. Pure bookkeeping, no I/O: the engine does
the calls and the active health checks.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Replica:
    url: str
    in_flight: int = 0
    failures: int = 0  # consecutive
    down_until: float = 0.0
    served: int = 0

    def healthy(self, now: float) -> bool:
        return now >= self.down_until


class Balancer:
    def __init__(self, urls: list[str], policy: str = "least_loaded", cooldown_s: float = 1.0, max_cooldown_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic):
        if not urls:
            raise ValueError("a balancer needs at least one URL")
        if policy not in ("least_loaded", "round_robin"):
            raise ValueError(f"policy must be least_loaded or round_robin, got {policy!r}")
        self.replicas = [Replica(u) for u in urls]
        self.policy, self.cooldown_s, self.max_cooldown_s, self.clock = policy, cooldown_s, max_cooldown_s, clock
        self._turn = itertools.count()
        self._lock = threading.Lock()

    def acquire(self) -> Replica:
        with self._lock:
            now = self.clock()
            up = [r for r in self.replicas if r.healthy(now)]
            turn = next(self._turn)
            if not up:
                pick = min(self.replicas, key=lambda r: r.down_until)
            elif self.policy == "round_robin":
                pick = up[turn % len(up)]
            else:
                n = len(self.replicas)
                pick = min(up, key=lambda r: (r.in_flight, (self.replicas.index(r) - turn) % n))
            pick.in_flight += 1
            return pick

    def release(self, replica: Replica, ok: bool) -> None:
        with self._lock:
            replica.in_flight -= 1
            if ok:
                replica.failures, replica.down_until = 0, 0.0
                replica.served += 1
            else:
                self.mark_down(replica)

    def mark_down(self, replica: Replica) -> None:
        replica.failures += 1
        replica.down_until = self.clock() + min(self.max_cooldown_s, self.cooldown_s * 2 ** (replica.failures - 1))

    def status(self) -> list[dict]:
        now = self.clock()
        return [{"url": r.url, "healthy": r.healthy(now), "in_flight": r.in_flight, "failures": r.failures, "served": r.served}
                for r in self.replicas]
