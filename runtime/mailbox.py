"""A process's mailbox: bounded, FIFO, with selective receive.

Ordering: messages from one sender to one receiver are received in the order they
were sent. Non-matching messages skipped by a selective receive stay where they were.

Bound: ``put`` raises :class:`~runtime.errors.MailboxFull` at the bound and counts the
overflow; ``put_wait`` waits for room instead (backpressure). Signals the runtime
itself delivers (``EXIT`` and ``DOWN`` messages) bypass the bound: a signal is never
lost because a mailbox is full.

Fairness: taking a message that is already there costs no scheduler round trip; the
receiver yields once every ``budget`` messages (a reduction budget, as on BEAM), so a
process draining a long mailbox cannot starve the others.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from itertools import islice
from typing import TYPE_CHECKING, Any, final

from .backend import Parkable
from .errors import MailboxFull, ReceiveTimeout

if TYPE_CHECKING:
    from .backend import Backend
    from .pid import Pid

DEFAULT_BOUND = 65_536
"""Messages a mailbox holds before ``send`` raises ``MailboxFull``."""

DEFAULT_BUDGET = 256
"""Messages a receiver takes without yielding to the scheduler."""


_EMPTY: deque[object] = deque(maxlen=0)
"""Shared by every mailbox that never held a message; replaced before any append."""


@final
class _Slot(Parkable):
    """One parked sender waiting for room."""

    __slots__ = ("_waiter",)

    def __init__(self) -> None:
        self._waiter: Any = None


@final
class Mailbox(Parkable):
    """The message queue of one process. Used by the runtime; see ``runtime.receive``."""

    __slots__ = (
        "_backend",
        "_budget",
        "_far",
        "_far_pid",
        "_peer",
        "_peer_pid",
        "_q",
        "_senders",
        "_waiter",
        "bound",
        "closed",
        "overflows",
        "owner",
    )

    def __init__(self, owner: Pid, backend: Backend, bound: int = DEFAULT_BOUND) -> None:
        if bound < 1:
            raise ValueError(f"mailbox bound must be at least 1, got {bound}")
        self.owner = owner
        self.bound = bound
        self.overflows = 0
        self.closed = False
        self._q: deque[object] = _EMPTY  # a real deque on the first message (760 bytes)
        self._waiter: Any = None
        self._senders: deque[_Slot] | None = None
        self._backend = backend
        self._budget = DEFAULT_BUDGET
        # The mailbox this process last sent to, and its pid: the sender's fast path
        # (runtime.api) skips the pid lookup when it sends to the same pid again.
        self._peer: Mailbox | None = None
        self._peer_pid: object = None
        # The pid on another node this process last sent to, and the distribution layer
        # (a runtime.dist.Distribution) that took it: the same fast path, remote.
        self._far: Any = None
        self._far_pid: object = None

    def __len__(self) -> int:
        return len(self._q)

    def put(self, msg: object) -> None:
        """Enqueue *msg* without waiting.

        Raises:
            MailboxFull: the mailbox holds ``bound`` messages; *msg* was not enqueued.
        """
        q = self._q
        if len(q) >= self.bound:
            self.overflows += 1
            raise MailboxFull(self.owner, self.bound)
        if q is _EMPTY:
            q = self._q = deque()
        q.append(msg)
        w = self._waiter
        if w is not None:
            self._waiter = None
            self._backend.unpark(w)

    def force(self, msg: object) -> None:
        """Enqueue *msg* past the bound: for signals (``EXIT``, ``DOWN``), never lost."""
        if self._q is _EMPTY:
            self._q = deque()
        self._q.append(msg)
        w = self._waiter
        if w is not None:
            self._waiter = None
            self._backend.unpark(w)

    async def put_wait(self, msg: object, budget: list[int] | None = None) -> None:
        """Enqueue *msg*, waiting while the mailbox is full. Returns at once if closed."""
        while len(self._q) >= self.bound and not self.closed:
            slot = _Slot()
            if self._senders is None:
                self._senders = deque()
            self._senders.append(slot)
            try:
                await self._backend.park(slot)
            except BaseException:
                try:
                    self._senders.remove(slot)
                except ValueError:
                    # Woken and cancelled at once: hand the wake-up to the next sender.
                    self._wake_sender()
                raise
        if self.closed:
            return
        if self._q is _EMPTY:
            self._q = deque()
        self._q.append(msg)
        w = self._waiter
        if w is not None:
            self._waiter = None
            self._backend.unpark(w)

    def _wake_sender(self) -> None:
        senders = self._senders
        if senders:
            slot = senders.popleft()
            w = slot._waiter
            if w is not None:
                slot._waiter = None
                self._backend.unpark(w)

    def remove_first(self, match: Callable[[Any], bool]) -> bool:
        """Remove the oldest message for which ``match(msg)`` is true, without waiting."""
        q = self._q
        for i, m in enumerate(q):
            if match(m):
                del q[i]
                if self._senders:
                    self._wake_sender()
                return True
        return False

    def close(self) -> int:
        """Mark the mailbox dead, release blocked senders; returns how many messages it held.

        Its bound drops to 0: a sender that still holds it as its last peer (see
        ``runtime.api``) finds no room and takes the slow path, which sees the pid dead.
        """
        self.closed = True
        self.bound = 0
        left = len(self._q)
        self._q = _EMPTY
        self._peer = self._peer_pid = None
        self._far = self._far_pid = None
        senders = self._senders
        while senders:
            self._wake_sender()
        return left

    async def get(self, timeout: float | None = None) -> object:
        """Take the oldest message, waiting up to *timeout* seconds (``None``: forever).

        Raises:
            ReceiveTimeout: nothing arrived in time.
        """
        q = self._q
        if not q:
            if timeout is None:
                while not self._q:
                    await self._backend.park(self)
            else:
                await self._wait_timeout(timeout, None, 0)
            q = self._q
        msg = q.popleft()
        if self._senders:
            self._wake_sender()
        self._budget -= 1
        if self._budget <= 0:
            self._budget = DEFAULT_BUDGET
            await self._backend.checkpoint()
        return msg

    async def get_match(self, match: Callable[[Any], bool], timeout: float | None = None) -> object:
        """Take the oldest message for which ``match(msg)`` is true; the rest keep their order.

        Raises:
            ReceiveTimeout: no matching message arrived in time.
        """
        scanned = 0
        while True:
            q = self._q
            for i, m in enumerate(islice(q, scanned, None), scanned):
                if match(m):
                    del q[i]
                    if self._senders:
                        self._wake_sender()
                    self._budget -= 1
                    if self._budget <= 0:
                        self._budget = DEFAULT_BUDGET
                        await self._backend.checkpoint()
                    return m
            scanned = len(q)
            if timeout is None:
                await self._backend.park(self)
            else:
                timeout = await self._wait_timeout(timeout, match, scanned)

    async def _wait_timeout(
        self, timeout: float, match: Callable[[Any], bool] | None, scanned: int
    ) -> float:
        """Park until a new message arrives; returns the time left. Raises on expiry."""
        if timeout <= 0:
            raise ReceiveTimeout("no matching message" if match else "mailbox empty")
        now = self._backend.current_time
        start = now()
        with self._backend.move_on_after(timeout):
            while len(self._q) <= scanned:
                await self._backend.park(self)
            return max(0.0, timeout - (now() - start))
        raise ReceiveTimeout(f"no {'matching ' if match else ''}message within {timeout} s")
