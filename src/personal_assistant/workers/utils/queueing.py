"""Queueing maths for capacity planning: the M/M/c queue (Erlang C) and Little's law.

A queue served by ``c`` identical slots (worker processes or threads), tasks arriving at
random at ``lambda`` per second (Poisson), each running a random time of mean ``1/mu`` seconds
(exponential). Then, with the offered load ``a = lambda / mu`` (the mean number of busy slots)
and the utilisation ``rho = a / c``:

- Erlang B, ``B(c, a)``, by the recursion ``B(0) = 1``, ``B(k) = a B(k-1) / (k + a B(k-1))``:
  every term stays in [0, 1], so it holds for thousands of slots, where the textbook formula's
  ``a**c / c!`` overflows a float (``170!`` already does);
- Erlang C, the probability that a task has to wait: ``C = c B / (c - a (1 - B))``;
- the mean wait ``Wq = C / (c mu - lambda)``, and the tail of the wait,
  ``P(wait > t) = C exp(-(c mu - lambda) t)``;
- Little's law ``L = lambda W``: ``lambda / mu`` tasks running, ``lambda Wq`` waiting.

With ``lambda >= c mu`` there is no steady state: the queue grows without bound, and every
wait is infinite. Pure: no Redis, Celery or app imports (DESIGN.md section 2).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

# The search for a concurrency stops here: a queue that needs more slots than this is a
# mistake in the measurements (a run time in ms taken for seconds), not a fleet to plan.
MAX_SERVERS = 100_000


def format_seconds(value: float) -> str:
    """A duration for people: ``0.277 s``, ``12.3 s``, ``12.5 min``, ``3.2 h``, ``inf``."""
    if not math.isfinite(value):
        return "inf"
    if value < 1:
        return f"{value:.3f} s"
    if value < 120:
        return f"{value:.1f} s"
    if value < 7200:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.1f} h"


def erlang_b(servers: int, offered_load: float) -> float:
    """Erlang B: the blocking probability of ``servers`` slots under ``offered_load`` Erlangs."""
    if servers < 0 or offered_load < 0:
        raise ValueError("servers and offered load must not be negative")
    blocking = 1.0
    for k in range(1, servers + 1):
        blocking = offered_load * blocking / (k + offered_load * blocking)
    return blocking


def erlang_c_from_b(servers: int, offered_load: float, blocking: float) -> float:
    """Erlang C from Erlang B for the same ``servers`` and load; 1.0 when overloaded."""
    if offered_load >= servers:
        return 1.0  # every task waits: the queue never empties
    return servers * blocking / (servers - offered_load * (1.0 - blocking))


def erlang_c(servers: int, offered_load: float) -> float:
    """Erlang C: the probability that a task waits for a slot (1.0 when ``a >= c``)."""
    if servers < 1:
        raise ValueError("an M/M/c queue needs at least one server")
    return erlang_c_from_b(servers, offered_load, erlang_b(servers, offered_load))


def littles_law(arrival_rate: float, time_in_system: float) -> float:
    """Little's law ``L = lambda W``: the mean number of tasks in a system they stay ``W`` in."""
    return arrival_rate * time_in_system


@dataclass(frozen=True)
class MMc:
    """An M/M/c queue's steady state (or its absence: ``stable`` False, waits infinite).

    Times in seconds, rates per second. ``in_service`` is the mean number of busy slots (the
    offered load), ``queue_length`` the mean number waiting (``lambda Wq``), ``in_system`` both.
    """

    arrival_rate: float
    mean_service_time: float
    servers: int
    offered_load: float
    utilisation: float
    p_wait: float
    mean_wait: float
    in_service: float
    queue_length: float
    in_system: float

    @property
    def stable(self) -> bool:
        """Whether the queue has a steady state (``lambda < c mu``)."""
        return self.offered_load < self.servers

    @property
    def spare_rate(self) -> float:
        """``c mu - lambda``: tasks per second of capacity beyond the arrivals (<= 0: none)."""
        return (self.servers - self.offered_load) / self.mean_service_time

    def wait_exceeds(self, seconds: float) -> float:
        """``P(wait > seconds)``."""
        if not self.stable:
            return 1.0
        return self.p_wait * math.exp(-self.spare_rate * seconds)

    def wait_quantile(self, quantile: float) -> float:
        """The wait that a fraction ``quantile`` of tasks stays within (0 when enough never
        wait at all; infinite when overloaded)."""
        if not 0.0 < quantile < 1.0:
            raise ValueError("a quantile is between 0 and 1")
        if not self.stable:
            return math.inf
        tail = 1.0 - quantile
        if self.p_wait <= tail:
            return 0.0
        return math.log(self.p_wait / tail) / self.spare_rate

    def describe(self, quantile: float) -> str:
        """The queue's state in one phrase: utilisation and the ``quantile`` wait, or overloaded."""
        if not self.stable:
            return f"rho {self.utilisation:.2f}: overloaded, the queue grows without bound"
        wait = format_seconds(self.wait_quantile(quantile))
        return f"rho {self.utilisation:.2f}, p{quantile * 100:.0f} wait {wait}"

    def to_dict(self, quantile: float = 0.95) -> dict[str, Any]:
        """JSON-ready numbers, with ``quantile_wait`` at ``quantile`` (infinite waits as
        None: JSON has no infinity)."""
        data = asdict(self)
        data["stable"] = self.stable
        data["quantile"] = quantile
        data["quantile_wait"] = self.wait_quantile(quantile)
        for key in ("mean_wait", "queue_length", "in_system", "quantile_wait"):
            if not math.isfinite(data[key]):
                data[key] = None
        return data


def _mmc(arrival_rate: float, mean_service_time: float, servers: int, blocking: float) -> MMc:
    load = arrival_rate * mean_service_time
    p_wait = erlang_c_from_b(servers, load, blocking)
    # C / (c mu - lambda), written with the run time so that mu is never divided out.
    stable = load < servers
    mean_wait = p_wait * mean_service_time / (servers - load) if stable else math.inf
    queue_length = littles_law(arrival_rate, mean_wait) if arrival_rate > 0 else 0.0
    return MMc(
        arrival_rate=arrival_rate,
        mean_service_time=mean_service_time,
        servers=servers,
        offered_load=load,
        utilisation=load / servers,
        p_wait=p_wait,
        mean_wait=mean_wait,
        in_service=load,
        queue_length=queue_length,
        in_system=queue_length + load,
    )


def _check(arrival_rate: float, mean_service_time: float) -> None:
    if not (math.isfinite(arrival_rate) and arrival_rate >= 0):
        raise ValueError(f"arrival rate must be a finite number >= 0 (got {arrival_rate!r})")
    if not (math.isfinite(mean_service_time) and mean_service_time > 0):
        raise ValueError(f"mean run time must be a finite number > 0 (got {mean_service_time!r})")


def mmc(arrival_rate: float, mean_service_time: float, servers: int) -> MMc:
    """The M/M/c queue of ``servers`` slots, ``arrival_rate`` tasks/s, runs of mean
    ``mean_service_time`` s."""
    _check(arrival_rate, mean_service_time)
    if servers < 1:
        raise ValueError("an M/M/c queue needs at least one server")
    load = arrival_rate * mean_service_time
    return _mmc(arrival_rate, mean_service_time, servers, erlang_b(servers, load))


def smallest_servers(
    arrival_rate: float,
    mean_service_time: float,
    *,
    max_utilisation: float,
    target_wait: float,
    quantile: float,
    minimum: int = 1,
) -> MMc:
    """The queue with the fewest slots (at least ``minimum``) whose utilisation is at most
    ``max_utilisation`` and whose ``quantile`` wait is at most ``target_wait`` seconds.

    Erlang B is carried from ``c - 1`` to ``c`` while the search goes up, so finding ``c``
    costs ``c`` steps in all, not ``c`` squared.
    """
    _check(arrival_rate, mean_service_time)
    if not 0.0 < max_utilisation <= 1.0:
        raise ValueError("the utilisation limit is in (0, 1]")
    if target_wait < 0:
        raise ValueError("the target wait must not be negative")
    load = arrival_rate * mean_service_time
    blocking = 1.0
    # A tolerance, so that 4 / 5 == 0.8 counts as "at most 0.8" despite rounding.
    tolerance = 1e-12
    for servers in range(1, MAX_SERVERS + 1):
        blocking = load * blocking / (servers + load * blocking)
        if servers < minimum or load / servers > max_utilisation + tolerance:
            continue
        queue = _mmc(arrival_rate, mean_service_time, servers, blocking)
        if queue.wait_quantile(quantile) <= target_wait + tolerance:
            return queue
    raise ValueError(
        f"no concurrency up to {MAX_SERVERS} meets the target: check the measurements "
        f"({arrival_rate} tasks/s of {mean_service_time} s each)"
    )


def servers_to_drain(
    arrival_rate: float, mean_service_time: float, backlog: float, horizon: float
) -> int:
    """The fewest slots that clear ``backlog`` waiting tasks within ``horizon`` seconds while
    new ones keep arriving: ``(c mu - lambda) horizon >= backlog``."""
    _check(arrival_rate, mean_service_time)
    if horizon <= 0:
        raise ValueError("the horizon must be positive")
    needed = (arrival_rate + backlog / horizon) * mean_service_time
    return max(1, math.ceil(needed - 1e-9))
