"""regency runtime: Erlang-style processes on trio (or asyncio, through anyio).

The layers, bottom up: exit reasons and pids (values); the mailbox; the node, which
owns processes and delivers messages and exit signals; GenServer on top of that; the
Erlang-style functions for code inside a process. Distribution and Raft build on these.
"""

from .api import (
    call as call,
)
from .api import (
    cancel_timer as cancel_timer,
)
from .api import (
    cast as cast,
)
from .api import (
    demonitor as demonitor,
)
from .api import (
    exit as exit,
)
from .api import (
    exit_and_wait as exit_and_wait,
)
from .api import (
    link as link,
)
from .api import (
    monitor as monitor,
)
from .api import (
    monitor_nodes as monitor_nodes,
)
from .api import (
    node as node,
)
from .api import (
    receive as receive,
)
from .api import (
    register as register,
)
from .api import (
    reply as reply,
)
from .api import (
    self_pid as self_pid,
)
from .api import (
    send as send,
)
from .api import (
    send_after as send_after,
)
from .api import (
    send_exit as send_exit,
)
from .api import (
    send_wait as send_wait,
)
from .api import (
    spawn as spawn,
)
from .api import (
    spawn_link as spawn_link,
)
from .api import (
    spawn_monitor as spawn_monitor,
)
from .api import (
    start_server as start_server,
)
from .api import (
    trap_exit as trap_exit,
)
from .api import (
    unlink as unlink,
)
from .api import (
    unregister as unregister,
)
from .api import (
    whereis as whereis,
)
from .dist import Distribution as Distribution
from .errors import (
    AlreadyRegistered as AlreadyRegistered,
)
from .errors import (
    AuthenticationFailed as AuthenticationFailed,
)
from .errors import (
    CallTimeout as CallTimeout,
)
from .errors import (
    MailboxFull as MailboxFull,
)
from .errors import (
    NodeClosed as NodeClosed,
)
from .errors import (
    NoProcError as NoProcError,
)
from .errors import (
    NotInProcess as NotInProcess,
)
from .errors import (
    PeerBusy as PeerBusy,
)
from .errors import (
    ProcessExit as ProcessExit,
)
from .errors import (
    ProtocolError as ProtocolError,
)
from .errors import (
    ReceiveTimeout as ReceiveTimeout,
)
from .errors import (
    RegencyError as RegencyError,
)
from .errors import (
    ReplyNotSendable as ReplyNotSendable,
)
from .errors import (
    ServerExited as ServerExited,
)
from .errors import (
    StartFailed as StartFailed,
)
from .errors import (
    Unregistered as Unregistered,
)
from .genserver import NOREPLY as NOREPLY
from .genserver import GenServer as GenServer
from .genserver import Stop as Stop
from .handshake import load_secret as load_secret
from .mailbox import DEFAULT_BOUND as DEFAULT_BOUND
from .messages import Down as Down
from .messages import Exit as Exit
from .messages import From as From
from .messages import NodeDown as NodeDown
from .messages import NodeUp as NodeUp
from .messages import TimerRef as TimerRef
from .node import Node as Node
from .node import current_node as current_node
from .pid import Name as Name
from .pid import Pid as Pid
from .pid import Ref as Ref
from .reasons import (
    Abnormal as Abnormal,
)
from .reasons import (
    Crashed as Crashed,
)
from .reasons import (
    ExitReason as ExitReason,
)
from .reasons import (
    Kill as Kill,
)
from .reasons import (
    Killed as Killed,
)
from .reasons import (
    NoConnection as NoConnection,
)
from .reasons import (
    NoProc as NoProc,
)
from .reasons import (
    Normal as Normal,
)
from .reasons import (
    Shutdown as Shutdown,
)
from .wire import message as message
from .wire import register_message as register_message

__all__ = [
    "DEFAULT_BOUND",
    "NOREPLY",
    "Abnormal",
    "AlreadyRegistered",
    "AuthenticationFailed",
    "CallTimeout",
    "Crashed",
    "Distribution",
    "Down",
    "Exit",
    "ExitReason",
    "From",
    "GenServer",
    "Kill",
    "Killed",
    "MailboxFull",
    "Name",
    "NoConnection",
    "NoProc",
    "NoProcError",
    "Node",
    "NodeClosed",
    "NodeDown",
    "NodeUp",
    "Normal",
    "NotInProcess",
    "PeerBusy",
    "Pid",
    "ProcessExit",
    "ProtocolError",
    "ReceiveTimeout",
    "Ref",
    "RegencyError",
    "ReplyNotSendable",
    "ServerExited",
    "Shutdown",
    "StartFailed",
    "Stop",
    "TimerRef",
    "Unregistered",
    "call",
    "cancel_timer",
    "cast",
    "current_node",
    "demonitor",
    "exit",
    "exit_and_wait",
    "link",
    "load_secret",
    "message",
    "monitor",
    "monitor_nodes",
    "node",
    "receive",
    "register",
    "register_message",
    "reply",
    "self_pid",
    "send",
    "send_after",
    "send_exit",
    "send_wait",
    "spawn",
    "spawn_link",
    "spawn_monitor",
    "start_server",
    "trap_exit",
    "unlink",
    "unregister",
    "whereis",
]
