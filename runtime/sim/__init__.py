"""The deterministic simulator: a whole Raft cluster in one process, on fake time.

``run_seed(SimConfig(seed=...))`` runs one seeded history of real
:class:`~runtime.raft.driver.RaftDriver` nodes on a simulated network
(:mod:`runtime.sim.network`) and disks (:mod:`runtime.sim.disk`) under trio's
``MockClock`` with autojump, and checks the invariants of :mod:`runtime.sim.invariants`.
``regency chaos --sim`` (:mod:`runtime.sim.cli`) runs many seeds with a report.
"""

from .cluster import ALL_FAULTS as ALL_FAULTS
from .cluster import FAULT_MIXES as FAULT_MIXES
from .cluster import RunResult as RunResult
from .cluster import SimConfig as SimConfig
from .cluster import repro_commands as repro_commands
from .cluster import run_seed as run_seed
from .disk import SimDisk as SimDisk
from .disk import SimStorage as SimStorage
from .invariants import Checker as Checker
from .invariants import SimViolation as SimViolation
from .invariants import Violation as Violation
from .network import LinkParams as LinkParams
from .network import SimNetwork as SimNetwork

__all__ = [
    "ALL_FAULTS",
    "FAULT_MIXES",
    "Checker",
    "LinkParams",
    "RunResult",
    "SimConfig",
    "SimDisk",
    "SimNetwork",
    "SimStorage",
    "SimViolation",
    "Violation",
    "repro_commands",
    "run_seed",
]
