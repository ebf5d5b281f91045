"""Seconds spent inside the networks' forward passes.

A stage's wall time is network compute plus everything around it (decoding, crops,
colour conversion, paste-back, serialisation). Timing the networks alone, with forward
hooks on the top-level modules an engine holds, makes the rest visible: servers export it
as ``talkinghead_network_seconds_total`` and the benchmarks subtract it.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable

import torch


def networks_of(engine: object) -> list[torch.nn.Module]:
    """The top-level networks an engine holds: attributes, or fields of a network bundle
    (none for a lite engine, or None)."""
    found: list[torch.nn.Module] = []
    for value in getattr(engine, "__dict__", {}).values():
        if isinstance(value, torch.nn.Module):
            found.append(value)
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            found += [v for v in vars(value).values() if isinstance(v, torch.nn.Module)]
    return found


class NetworkClock:
    """Calls ``on_seconds(s)`` after every forward pass of the given networks.

    Thread-safe (a server runs several streams at once). On cuda, ``synchronize`` makes
    the figure the real compute time at the price of ending the CPU/GPU overlap; without
    it the figure is only the launch time, so servers synchronise on request only.
    """

    def __init__(self, networks: list[torch.nn.Module], on_seconds: Callable[[float], None],
                 synchronize: bool = False):
        self._on_seconds = on_seconds
        self._sync = synchronize and torch.cuda.is_available()
        self._local = threading.local()
        self._handles = [h for net in networks for h in (
            net.register_forward_pre_hook(self._before), net.register_forward_hook(self._after))]

    def _before(self, module: torch.nn.Module, _inputs) -> None:
        if self._sync:
            torch.cuda.synchronize()
        starts = self._local.__dict__.setdefault("starts", {})
        starts[id(module)] = time.perf_counter()

    def _after(self, module: torch.nn.Module, _inputs, _output) -> None:
        if self._sync:
            torch.cuda.synchronize()
        start = self._local.starts.pop(id(module), None)
        if start is not None:
            self._on_seconds(time.perf_counter() - start)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


class NetworkSeconds:
    """A running total of network seconds, for one measurement in one process."""

    def __init__(self, engine: object):
        self.seconds = 0.0
        self._lock = threading.Lock()
        self._clock = NetworkClock(networks_of(engine), self._add, synchronize=True)

    def _add(self, seconds: float) -> None:
        with self._lock:
            self.seconds += seconds

    def __enter__(self) -> NetworkSeconds:
        return self

    def __exit__(self, *exc) -> None:
        self._clock.remove()
