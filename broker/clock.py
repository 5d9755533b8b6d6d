"""The real-time clock: simulated time = wall time × speed factor.

In virtual time (the default) no clock object exists: the protocol computes every simulated
instant from the channel model and the compute-time model, and waits only for real messages. In
real time a :class:`RealtimeClock` maps the event loop's monotonic wall clock onto simulated
seconds, so that a latency becomes a real delay (the receiver holds a message until its delivery
instant), a lost message a real drop, and a solve takes the simulated time its wall time is
worth. Results then depend on the machine and the broker: not reproducible, and the results say
so (``summary.json`` ``clock``).

Every node keeps its own clock. The plant starts the run's at simulated second 0; an agent aligns
its clock on the first measurement it receives (the plant sends interval ``n``'s measurement at
simulated second ``n * interval_s``), so clocks of different processes or machines agree to
within the broker's own delivery time, which is what a real deployment sees too.
"""

from __future__ import annotations

import asyncio

__all__ = ["RealtimeClock"]


class RealtimeClock:
    """Simulated seconds from the running event loop's clock: ``t_s = (wall - epoch) * speed``.

    ``speed`` is simulated seconds per wall second (``1`` = real time, ``60`` = a simulated
    minute per wall second). Unstarted, :meth:`now_s` is 0.
    """

    def __init__(self, speed: float) -> None:
        if not speed > 0:
            raise ValueError(f"speed must be positive, got {speed!r}")
        self.speed = float(speed)
        self._epoch: float | None = None

    @property
    def started(self) -> bool:
        """Whether :meth:`start` has been called."""
        return self._epoch is not None

    def start(self, at_s: float = 0.0) -> None:
        """Start (or re-align) the clock so that it reads ``at_s`` now."""
        self._epoch = asyncio.get_running_loop().time() - at_s / self.speed

    def now_s(self) -> float:
        """The simulated time now, s (0 before :meth:`start`)."""
        if self._epoch is None:
            return 0.0
        return (asyncio.get_running_loop().time() - self._epoch) * self.speed

    def wall_until(self, t_s: float) -> float:
        """Wall seconds from now until the clock reads ``t_s`` (0 when that is past)."""
        return max(0.0, (t_s - self.now_s()) / self.speed)

    async def sleep_until(self, t_s: float) -> None:
        """Sleep until the clock reads ``t_s`` (return at once when it already has)."""
        wait = self.wall_until(t_s)
        if wait > 0:
            await asyncio.sleep(wait)

    def simulated(self, wall_s: float) -> float:
        """The simulated duration of ``wall_s`` wall seconds."""
        return wall_s * self.speed
