"""Time integrals of a replay: GPUs held and asked for, per group, as piecewise-constant curves.

The replay tells the ledger every change (`hold`, `wait`) after moving it to the instant of the
change (`advance`); between changes nothing moves, so each integral is exact. A group is what
results are reported by (a Philly VC), whatever queue the policy put its jobs in; its `quota`
is its entitlement in GPUs. Definitions (all in GPU-seconds):

- busy: GPUs held (running or evicting);
- idle while waiting: `min(free GPUs, GPUs asked for by waiting work)`, the GPUs that sat idle
  although someone waited for them;
- entitled: `min(quota, demand)` while the group has demand (held + waiting > 0);
  served: `min(held, quota, demand)` over the same time: the group got its due when equal.
`window_busy_seconds` (per group: `group_window_busy`) is the busy integral over
[0, `window_end`] only (the span in which the trace submits work), so utilisation is not
diluted by the last long jobs running alone.
Hourly bins (`bin_seconds`) keep the curves for plots.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["GpuTimeLedger"]


class GpuTimeLedger:
    """Integrals over [0, now]; see the module docstring. Not thread-safe."""

    def __init__(
        self,
        *,
        total_gpus: int,
        quotas: Mapping[str, int],
        window_end: float = 0.0,
        bin_seconds: float = 3600.0,
    ) -> None:
        """Start at time 0 with nothing held or waiting, for groups `quotas` (GPUs each)."""
        self.total_gpus = total_gpus
        self.groups = tuple(sorted(quotas))
        self.quota = dict(quotas)
        self.bin_seconds = bin_seconds
        self.now = 0.0
        self.held = dict.fromkeys(self.groups, 0)
        self.waiting = dict.fromkeys(self.groups, 0)
        self.held_total = 0
        self.waiting_total = 0
        self.busy_seconds = 0.0
        self.window_end = window_end
        self.window_busy_seconds = 0.0
        self.idle_waiting_seconds = 0.0
        self.group_busy = dict.fromkeys(self.groups, 0.0)
        self.group_window_busy = dict.fromkeys(self.groups, 0.0)
        self.entitled = dict.fromkeys(self.groups, 0.0)
        self.served = dict.fromkeys(self.groups, 0.0)
        self.busy_bins: list[float] = []
        self.waiting_bins: list[float] = []
        self.group_bins: dict[str, list[float]] = {group: [] for group in self.groups}

    def hold(self, group: str, gpus: int) -> None:
        """`group` now holds `gpus` more GPUs (negative: fewer)."""
        self.held[group] += gpus
        self.held_total += gpus

    def wait(self, group: str, gpus: int) -> None:
        """`group` now waits for `gpus` more GPUs (negative: fewer)."""
        self.waiting[group] += gpus
        self.waiting_total += gpus

    def advance(self, now: float) -> None:
        """Integrate the current values from the ledger's time to `now` (never backwards)."""
        if self.now < self.window_end < now:
            self.advance(self.window_end)
        span = now - self.now
        if span <= 0:
            return
        in_window = now <= self.window_end
        if in_window:
            self.window_busy_seconds += self.held_total * span
        self.busy_seconds += self.held_total * span
        free = self.total_gpus - self.held_total
        self.idle_waiting_seconds += min(free, self.waiting_total) * span
        for group in self.groups:
            held = self.held[group]
            if held:
                self.group_busy[group] += held * span
                if in_window:
                    self.group_window_busy[group] += held * span
            demand = held + self.waiting[group]
            if demand:
                due = min(self.quota[group], demand)
                self.entitled[group] += due * span
                self.served[group] += min(held, due) * span
        self._bin(self.now, now)
        self.now = now

    def _bin(self, start: float, end: float) -> None:
        size = self.bin_seconds
        while start < end:
            index = int(start // size)
            stop = min(end, (index + 1) * size)
            while len(self.busy_bins) <= index:
                self.busy_bins.append(0.0)
                self.waiting_bins.append(0.0)
                for bins in self.group_bins.values():
                    bins.append(0.0)
            part = (stop - start) / size
            self.busy_bins[index] += self.held_total * part
            self.waiting_bins[index] += self.waiting_total * part
            for group in self.groups:
                held = self.held[group]
                if held:
                    self.group_bins[group][index] += held * part
            start = stop
