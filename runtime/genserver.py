"""GenServer: a process that serves calls, casts and other messages, one at a time.

Subclass :class:`GenServer` and override the callbacks you need:

* ``async init(*args)`` -- runs in the new process before anything else. If it raises,
  the process exits ``Crashed`` and ``start_server`` raises ``StartFailed``.
* ``async handle_call(request, from_)`` -- its return value is the reply. Return
  :data:`NOREPLY` to reply later with ``runtime.reply(from_, value)`` (from this or any
  other process). Raise :class:`Stop` to stop, optionally replying first. The default
  crashes the server: an unexpected call is a bug.
* ``async handle_cast(msg)`` -- no reply. The default crashes the server likewise.
* ``async handle_info(msg)`` -- every other message (``Down``, ``Exit``, timers). The
  default logs ``unexpected_message`` and drops it, as OTP does.
* ``async terminate(reason)`` -- runs when the server stops for any reason except
  ``Killed``: after :class:`Stop`, a crash in a callback, or an exit signal. It runs
  shielded from cancellation for at most ``TERMINATE_TIMEOUT`` seconds.

Messages are handled strictly in arrival order, one at a time; ``call`` from the
server to itself therefore deadlocks until its timeout, as in OTP.
"""

from __future__ import annotations

from typing import Any, ClassVar, Final, final

import anyio
import structlog

from .errors import CallTimeout, ProcessExit, ServerExited, StartFailed
from .mailbox import DEFAULT_BUDGET
from .messages import Call, Cast, From
from .node import TERMINATE_TIMEOUT, Node, _process_or_none, _ReplySlot, current_process
from .pid import Pid
from .reasons import KILL, NORMAL, Crashed, ExitReason, Killed, Shutdown

log = structlog.get_logger("regency")


@final
class _NoReply:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NOREPLY"


NOREPLY: Final = _NoReply()
"""Return this from ``handle_call`` to reply later with ``reply(from_, value)``."""


class Stop(ProcessExit):
    """Raise in a callback to stop the server with *reason* (default ``Normal``).

    In ``handle_call``, pass ``reply=`` to answer the caller before stopping.
    """

    _UNSET: ClassVar[object] = object()

    def __init__(self, reason: ExitReason = NORMAL, *, reply: object = _UNSET) -> None:
        super().__init__(reason)
        self.reply = reply

    @property
    def has_reply(self) -> bool:
        """True if a reply was given."""
        return self.reply is not Stop._UNSET


class GenServer:
    """Base class of servers; see the module documentation for the callbacks."""

    async def init(self, *args: Any) -> None:
        """Initialise the server's state; runs in the server's process."""

    async def handle_call(self, request: Any, from_: From) -> Any:
        """Answer a call; the default crashes the server."""
        raise NotImplementedError(f"{type(self).__qualname__} got an unexpected call {request!r}")

    async def handle_cast(self, msg: Any) -> None:
        """Handle a cast; the default crashes the server."""
        raise NotImplementedError(f"{type(self).__qualname__} got an unexpected cast {msg!r}")

    async def handle_info(self, msg: Any) -> None:
        """Handle any other message; the default logs and drops it."""
        proc = current_process()
        log.warning(
            "unexpected_message",
            node=proc.node.name,
            pid=str(proc.pid),
            server=type(self).__qualname__,
            msg=repr(msg)[:200],
        )

    async def terminate(self, reason: ExitReason) -> None:
        """Clean up before the server stops; the default does nothing."""


_DEFAULT_TERMINATE: Final = GenServer.terminate
_DEFAULT_INIT: Final = GenServer.init
_NO_ACK: Final[list[_ReplySlot]] = []  # never appended to


async def _serve(server: GenServer, args: tuple[Any, ...], ack: list[_ReplySlot]) -> None:
    proc = current_process()
    node = proc.node
    if ack:  # none when the server has GenServer's own init, which does nothing
        await server.init(*args)
        ack[0].answer(proc.pid)
    mb = proc.mailbox
    park = mb._backend.park
    reason: ExitReason = NORMAL
    # With no terminate callback, nothing below runs user code on the way out: while
    # parked for a message the server is idle, and an exit signal may end it at once
    # (see Node.exit).
    bare = type(server).terminate is _DEFAULT_TERMINATE
    try:
        while True:
            # Mailbox.get inlined: one frame less per message on the server's hot path.
            if not mb._q:
                proc._idle = bare
                while not mb._q:
                    await park(mb)
                proc._idle = False
            msg = mb._q.popleft()
            if mb._senders:
                mb._wake_sender()
            mb._budget -= 1
            if mb._budget <= 0:
                mb._budget = DEFAULT_BUDGET
                await mb._backend.checkpoint()
            t = type(msg)
            if t is Call:
                call: Call = msg  # type: ignore[assignment]
                ref = call.ref
                try:
                    result = await server.handle_call(call.request, From(call.caller, ref))
                except Stop as stop:
                    if stop.has_reply:
                        node.reply(ref, stop.reply)
                    raise
                if result is not NOREPLY:
                    node.reply(ref, result)
            elif t is Cast:
                await server.handle_cast(msg.msg)  # type: ignore[attr-defined]
            else:
                await server.handle_info(msg)
    except ProcessExit as e:
        reason = e.reason
        raise
    except Exception as e:
        reason = Crashed.from_exception(e)
        raise
    except BaseException:
        reason = proc._pending or Shutdown("cancelled")
        raise
    finally:
        # The default terminate does nothing: skip its two cancel scopes, which were a
        # tenth of a supervised restart.
        if type(server).terminate is not _DEFAULT_TERMINATE and not isinstance(reason, Killed):
            with anyio.CancelScope(shield=True), anyio.move_on_after(TERMINATE_TIMEOUT):
                try:
                    await server.terminate(reason)
                except Exception:
                    log.exception(
                        "terminate_failed", node=node.name, pid=str(proc.pid), reason=str(reason)
                    )


async def start_server(
    node: Node,
    server: GenServer | type[GenServer],
    *args: Any,
    name: str | None = None,
    link: bool = False,
    timeout: float | None = 5.0,
) -> Pid:
    """Start *server* in a new process, run its ``init(*args)``, and return its pid.

    Args:
        server: a GenServer instance, or a class to instantiate with no arguments.
        name: register the server under this local name before ``init`` runs.
        link: link the server to the calling process (``start_link``).
        timeout: seconds ``init`` may take; then the server is killed.

    A server that does not override ``init`` has nothing to wait for: its ``init``
    does nothing and cannot fail, so the call returns as soon as the process is
    spawned (named and linked), as if ``init`` had run at once. Its end, even before
    it first runs, is then an exit like any later one, never a ``StartFailed``.

    Raises:
        StartFailed: ``init`` raised or the process exited before finishing ``init``
            (``.reason`` says why), or it took longer than *timeout*.
        AlreadyRegistered: *name* is taken.
    """
    instance = server() if isinstance(server, type) else server
    caller = _process_or_none()
    link_to = caller.pid if (link and caller is not None) else None
    if type(instance).init is _DEFAULT_INIT and "init" not in getattr(instance, "__dict__", ()):
        pid = node.spawn(_serve, instance, args, _NO_ACK, link_to=link_to, name=name)
        if node._charge():  # no wait: one reduction, so many starts in a row still yield
            await node._checkpoint()
        return pid
    ack: list[_ReplySlot] = []  # filled before the new process first runs
    pid = node.spawn(_serve, instance, args, ack, link_to=link_to, name=name)
    proc = node.process(pid)  # spawned, not yet run: alive
    slot = node._watch(proc)  # answered by the server after init, failed if it ends first
    ack.append(slot)
    try:
        await node._wait_slot(slot, timeout)
    except ServerExited as e:
        raise StartFailed(e.reason) from None
    except CallTimeout:
        node.exit(pid, KILL)
        raise StartFailed(Shutdown("init_timeout")) from None
    finally:
        node._unwatch(proc, slot)
    return pid
