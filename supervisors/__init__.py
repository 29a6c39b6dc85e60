"""regency supervisors: OTP supervision trees.

How the layers stack: :mod:`.spec` holds the values a supervisor is configured with
(child specs, flags; validated when made); :mod:`.strategy` is the pure restart decision
(``decide`` returns a ``Plan``; no IO, no clock, no randomness of its own);
:mod:`.supervisor` is the process that carries the plans out (start order, the shutdown
protocol, restarts, backoff timers, the child operations) and :mod:`.dynamic` the
supervisor of children started on demand. :mod:`.errors` names every failed outcome.
Everything here runs on :mod:`runtime`; nothing here imports ``agents``.
"""

from .dynamic import DynamicFlags as DynamicFlags
from .dynamic import DynamicSupervisor as DynamicSupervisor
from .dynamic import dynamic_supervisor_spec as dynamic_supervisor_spec
from .dynamic import start_dynamic_supervisor as start_dynamic_supervisor
from .errors import AlreadyPresent as AlreadyPresent
from .errors import AlreadyStarted as AlreadyStarted
from .errors import MaxChildren as MaxChildren
from .errors import NotFound as NotFound
from .errors import NotSupported as NotSupported
from .errors import Restarting as Restarting
from .errors import Running as Running
from .errors import StartFailed as StartFailed
from .errors import SupervisorError as SupervisorError
from .spec import BRUTAL_KILL as BRUTAL_KILL
from .spec import INFINITY as INFINITY
from .spec import AutoShutdown as AutoShutdown
from .spec import Backoff as Backoff
from .spec import BadChildSpec as BadChildSpec
from .spec import BadSupFlags as BadSupFlags
from .spec import ChildSpec as ChildSpec
from .spec import ChildType as ChildType
from .spec import Restart as Restart
from .spec import ShutdownKind as ShutdownKind
from .spec import ShutdownTimeout as ShutdownTimeout
from .spec import Strategy as Strategy
from .spec import SupFlags as SupFlags
from .spec import check_child_specs as check_child_specs
from .strategy import BackoffState as BackoffState
from .strategy import ChildExited as ChildExited
from .strategy import ChildState as ChildState
from .strategy import Event as Event
from .strategy import History as History
from .strategy import Label as Label
from .strategy import Plan as Plan
from .strategy import decide as decide
from .strategy import should_restart as should_restart
from .supervisor import ChildInfo as ChildInfo
from .supervisor import Counts as Counts
from .supervisor import Supervisor as Supervisor
from .supervisor import SupRef as SupRef
from .supervisor import count_children as count_children
from .supervisor import delete_child as delete_child
from .supervisor import get_childspec as get_childspec
from .supervisor import restart_child as restart_child
from .supervisor import server_spec as server_spec
from .supervisor import start_child as start_child
from .supervisor import start_supervisor as start_supervisor
from .supervisor import stop as stop
from .supervisor import supervisor_spec as supervisor_spec
from .supervisor import terminate_child as terminate_child
from .supervisor import which_children as which_children
from .supervisor import worker_spec as worker_spec

__all__ = [
    "BRUTAL_KILL",
    "INFINITY",
    "AlreadyPresent",
    "AlreadyStarted",
    "AutoShutdown",
    "Backoff",
    "BackoffState",
    "BadChildSpec",
    "BadSupFlags",
    "ChildExited",
    "ChildInfo",
    "ChildSpec",
    "ChildState",
    "ChildType",
    "Counts",
    "DynamicFlags",
    "DynamicSupervisor",
    "Event",
    "History",
    "Label",
    "MaxChildren",
    "NotFound",
    "NotSupported",
    "Plan",
    "Restart",
    "Restarting",
    "Running",
    "ShutdownKind",
    "ShutdownTimeout",
    "StartFailed",
    "Strategy",
    "SupFlags",
    "SupRef",
    "Supervisor",
    "SupervisorError",
    "check_child_specs",
    "count_children",
    "decide",
    "delete_child",
    "dynamic_supervisor_spec",
    "get_childspec",
    "restart_child",
    "server_spec",
    "should_restart",
    "start_child",
    "start_dynamic_supervisor",
    "start_supervisor",
    "stop",
    "supervisor_spec",
    "terminate_child",
    "which_children",
    "worker_spec",
]
