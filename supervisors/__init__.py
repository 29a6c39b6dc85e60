"""regency supervisors: OTP supervision trees.

How the layers stack: :mod:`.spec` holds the values a supervisor is configured with
(child specs, flags; validated when made); :mod:`.strategy` is the pure restart decision
(``decide`` returns a ``Plan``; no IO, no clock, no randomness of its own);
:mod:`.supervisor` is the process that carries the plans out (start order, the shutdown
protocol, restarts, backoff timers, the child operations) and :mod:`.dynamic` the
supervisor of children started on demand. :mod:`.errors` names every failed outcome.
Failover stacks on top: :mod:`.ledger` (the task ledger, a pure state machine),
:mod:`.coordination` (leadership and the ledger behind one interface),
:mod:`.raft_coordinator` (its built-in Raft implementation), :mod:`.client` (submit and
await tasks from any node), :mod:`.workers` (workers that survive failovers) and
:mod:`.failover` (the group member: the fenced orchestrator singleton and its watchdog).
Everything here runs on :mod:`runtime`; nothing here imports ``agents``.
"""

from .client import LEDGER_SERVICE as LEDGER_SERVICE
from .client import GroupClient as GroupClient
from .client import GroupStatus as GroupStatus
from .client import GroupUnavailable as GroupUnavailable
from .client import SubmitRefused as SubmitRefused
from .client import TaskFailed as TaskFailed
from .client import UnknownTaskId as UnknownTaskId
from .coordination import Applied as Applied
from .coordination import CoordinationError as CoordinationError
from .coordination import Coordinator as Coordinator
from .coordination import CoordinatorStopped as CoordinatorStopped
from .coordination import LeaderView as LeaderView
from .coordination import LocalCoordinator as LocalCoordinator
from .coordination import NotLeader as NotLeader
from .coordination import OutcomeUnknown as OutcomeUnknown
from .coordination import Unavailable as Unavailable
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
from .failover import GROUP_SUPERVISOR as GROUP_SUPERVISOR
from .failover import ORCHESTRATOR_NAME as ORCHESTRATOR_NAME
from .failover import ORCHESTRATOR_SUPERVISOR as ORCHESTRATOR_SUPERVISOR
from .failover import Deposed as Deposed
from .failover import Dispatcher as Dispatcher
from .failover import GroupConfig as GroupConfig
from .failover import GroupMember as GroupMember
from .failover import LedgerService as LedgerService
from .failover import OrchestratorContext as OrchestratorContext
from .failover import WorkerInfo as WorkerInfo
from .failover import WorkerRegistry as WorkerRegistry
from .failover import start_group_member as start_group_member
from .raft_coordinator import RaftCoordinator as RaftCoordinator
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
from .workers import Assignment as Assignment
from .workers import AssignmentRefused as AssignmentRefused
from .workers import WorkerConfig as WorkerConfig
from .workers import WorkerHello as WorkerHello
from .workers import run_worker as run_worker
from .workers import start_worker as start_worker
from .workers import worker_child_spec as worker_child_spec

__all__ = [
    "BRUTAL_KILL",
    "GROUP_SUPERVISOR",
    "INFINITY",
    "LEDGER_SERVICE",
    "ORCHESTRATOR_NAME",
    "ORCHESTRATOR_SUPERVISOR",
    "AlreadyPresent",
    "AlreadyStarted",
    "Applied",
    "Assignment",
    "AssignmentRefused",
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
    "CoordinationError",
    "Coordinator",
    "CoordinatorStopped",
    "Counts",
    "Deposed",
    "Dispatcher",
    "DynamicFlags",
    "DynamicSupervisor",
    "Event",
    "GroupClient",
    "GroupConfig",
    "GroupMember",
    "GroupStatus",
    "GroupUnavailable",
    "History",
    "Label",
    "LeaderView",
    "LedgerService",
    "LocalCoordinator",
    "MaxChildren",
    "NotFound",
    "NotLeader",
    "NotSupported",
    "OrchestratorContext",
    "OutcomeUnknown",
    "Plan",
    "RaftCoordinator",
    "Restart",
    "Restarting",
    "Running",
    "ShutdownKind",
    "ShutdownTimeout",
    "StartFailed",
    "Strategy",
    "SubmitRefused",
    "SupFlags",
    "SupRef",
    "Supervisor",
    "SupervisorError",
    "TaskFailed",
    "Unavailable",
    "UnknownTaskId",
    "WorkerConfig",
    "WorkerHello",
    "WorkerInfo",
    "WorkerRegistry",
    "check_child_specs",
    "count_children",
    "decide",
    "delete_child",
    "dynamic_supervisor_spec",
    "get_childspec",
    "restart_child",
    "run_worker",
    "server_spec",
    "should_restart",
    "start_child",
    "start_dynamic_supervisor",
    "start_group_member",
    "start_supervisor",
    "start_worker",
    "stop",
    "supervisor_spec",
    "terminate_child",
    "which_children",
    "worker_child_spec",
    "worker_spec",
]
