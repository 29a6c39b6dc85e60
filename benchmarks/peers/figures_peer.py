"""A line-protocol peer whose answer is a list of figures, e.g. raw per-operation samples.

:class:`~benchmarks.harness.LineProtocolPeer` answers one figure per request; the
supervision and transport suites need several from one run (every restart's latency,
every call's round trip) so that regency and its peers are reduced to percentiles by the
same code. The subprocess answers ``"ok <f1> <f2> ..."`` (or ``"error <text>"``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from benchmarks.harness import LineProtocolPeer, Measure, percentile


class FiguresPeer(LineProtocolPeer):
    """A :class:`LineProtocolPeer` whose subprocess answers any number of figures."""

    def request_figures(self, case_name: str, n: int) -> list[float]:
        """Run ``case_name`` with ``n`` units in the subprocess; return its figures.

        Raises:
            RuntimeError: the subprocess answered an error, nothing, or died.
        """
        proc = self._ensure()
        assert proc.stdin is not None
        assert proc.stdout is not None
        proc.stdin.write(f"{case_name} {n}\n")
        proc.stdin.flush()
        line = proc.stdout.readline()
        if not line:
            code = proc.wait()
            raise RuntimeError(f"{self.name} subprocess exited with status {code}")
        status, _, rest = line.strip().partition(" ")
        if status != "ok":
            raise RuntimeError(f"{self.name}: {rest or line.strip()}")
        figures = [float(x) for x in rest.split()]
        if not figures:
            raise RuntimeError(f"{self.name}: no figures for {case_name}")
        return figures

    def __enter__(self) -> FiguresPeer:
        return self

    def measure_with(
        self, case_name: str, reduce: Callable[[Sequence[float]], Mapping[str, float] | float]
    ) -> Measure:
        """A :data:`Measure` that asks for ``case_name`` and reduces the figures."""

        def run(n: int) -> Mapping[str, float] | float:
            return reduce(self.request_figures(case_name, n))

        return run


def percentiles(names: Mapping[str, float]) -> Callable[[Sequence[float]], dict[str, float]]:
    """A reducer from samples to ``{metric name: percentile}`` (``names``: name -> q)."""

    def reduce(samples: Sequence[float]) -> dict[str, float]:
        return {name: percentile(samples, q) for name, q in names.items()}

    return reduce


def first(samples: Sequence[float]) -> float:
    """A reducer that keeps the single figure a subprocess answered."""
    return samples[0]
