"""A scenario interpreter for the Raft core, in the style of etcd-io/raft's datadriven tests.

A scenario file (``testdata/*.txt``) is a sequence of blocks::

    # comments state the claim
    command arg key=value
    ----
    expected output

An empty output is written ``ok``. The interpreter runs a small cluster of
:class:`RaftNode` on :class:`MemoryStorage`, with an in-memory message queue; nothing moves
unless a command moves it. Election timeouts are fixed at ``election`` ticks (the injected
rng always draws 0), so ``tick-election`` reliably fires exactly one timeout.

Commands:

- ``add-nodes N voters=(1,2,3) election=10 heartbeat=1 prevote=true checkquorum=true
  max-inflight=256 max-entries=256 leaderloss=true``: add N nodes with the next ids.
- ``campaign ID``, ``propose ID DATA``, ``read-index ID CTX``, ``peer-down ID PEER``,
  ``transfer-leadership from=ID to=ID``: call the node's API.
- ``tick ID N``, ``tick-heartbeat ID``, ``tick-election ID``: tick a node.
- ``process-ready ID...``: handle each node's Ready (send the early messages, persist,
  send the others, apply, advance).
- ``send-early ID``: take the node's Ready and send only its early messages; the rest
  waits, as while the node's fsync runs (messages are still delivered to it). The next
  ``process-ready`` (or ``stabilize``) of the node finishes that Ready; ``crash`` loses it.
- ``crash ID``: the node loses power: a Ready taken by ``send-early`` is never persisted,
  messages queued for it are dropped, and it restarts from its storage.
- ``deliver-msgs ID... [type=APPEND]``: deliver the queued messages addressed to the nodes.
- ``drop-msgs ID...``: drop the queued messages addressed to the nodes.
- ``stabilize [ID...]``: alternate process-ready and deliver-msgs until nothing happens.
- ``partition 1 | 2 3``: messages between groups are dropped (queued ones too); ``heal``.
- ``compact ID INDEX``: snapshot the node's state machine at INDEX and truncate its log.
- ``restart ID``: rebuild the node from its storage (crash and recovery).
- ``raft-state``, ``raft-log ID``, ``status ID`` (leader's progress), ``applied ID``.
- ``log-level none|info|debug``: ``none`` hides everything but queries and errors;
  ``info`` shows Ready handling, message delivery and info logs; ``debug`` adds debug logs.
"""

from __future__ import annotations

import contextlib
import logging
import random
import re
import shlex
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import attrs
import structlog

from runtime.raft.core import (
    Config,
    Entry,
    EntryKind,
    MemoryStorage,
    Message,
    MsgType,
    ProposalDropped,
    RaftError,
    RaftNode,
    Ready,
    Role,
    Snapshot,
)

_LEVELS = {"none": 100, "info": logging.INFO, "debug": logging.DEBUG}
_LEVEL_NAMES = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}


class FixedRandom(random.Random):
    """An rng whose ``randrange`` always returns its lower bound: no election jitter."""

    def randrange(self, start: int, stop: int | None = None, step: int = 1) -> int:
        """Return 0 (or ``start`` when a stop is given)."""
        return 0 if stop is None else start


# --------------------------------------------------------------------------- formatting


def fmt_entry(e: Entry) -> str:
    """Format an entry as ``term/index "data"`` (or ``term/index NOOP``)."""
    if e.kind is EntryKind.NOOP:
        return f"{e.term}/{e.index} NOOP"
    return f'{e.term}/{e.index} "{e.data.decode(errors="replace")}"'


def fmt_snapshot(s: Snapshot) -> str:
    """Format a snapshot's metadata."""
    return f"Index:{s.index} Term:{s.term} Voters:({' '.join(s.voters)})"


def fmt_msg(m: Message) -> str:
    """Format a message on one line, etcd style."""
    out = f"{m.frm}->{m.to} {m.type.name} Term:{m.term}"
    t = m.type
    if t in (MsgType.VOTE, MsgType.PRE_VOTE):
        out += f" Log:{m.log_term}/{m.index}"
    elif t is MsgType.APPEND:
        out += f" Log:{m.log_term}/{m.index} Commit:{m.commit}"
        if m.entries:
            out += f" Entries:[{', '.join(fmt_entry(e) for e in m.entries)}]"
    elif t is MsgType.APPEND_RESP:
        out += f" Index:{m.index}"
        if m.reject:
            out += f" Rejected (Hint: {m.reject_hint} HintTerm: {m.log_term})"
    elif t is MsgType.HEARTBEAT:
        out += f" Commit:{m.commit}"
    elif t in (MsgType.VOTE_RESP, MsgType.PRE_VOTE_RESP):
        if m.reject:
            out += " Rejected"
    elif t is MsgType.SNAPSHOT and m.snapshot is not None:
        out += f" Snapshot:[{fmt_snapshot(m.snapshot)}]"
    elif t is MsgType.READ_INDEX_RESP:
        out += f" Index:{m.index}"
    if m.context:
        out += f" Context:{m.context.decode(errors='replace')}"
    return out


def _fmt_value(v: object) -> str:
    if isinstance(v, tuple):
        return "(" + " ".join(str(x) for x in v) + ")"
    return str(v)


# --------------------------------------------------------------------------- the cluster


@attrs.define
class NodeState:
    """One simulated node: the core, its storage and its state machine."""

    node: RaftNode
    storage: MemoryStorage
    config: Config
    applied: list[bytes] = attrs.Factory(list)  # state machine: applied NORMAL data in order
    applied_index: int = 0


class Cluster:
    """An in-memory cluster: nodes, storages, state machines and a message queue.

    Used by the scenario interpreter and by the property tests. ``on_apply`` and
    ``on_ready`` hooks let property tests observe every Ready.
    """

    def __init__(self) -> None:
        """Create an empty cluster."""
        self.nodes: dict[str, NodeState] = {}
        self.queue: list[Message] = []
        self.groups: list[set[str]] | None = None
        self.held: dict[str, Ready] = {}  # Readies whose early messages left, not persisted
        self.out: list[str] = []
        self.level = logging.INFO

    # -- output

    def emit(self, line: str, level: int = logging.INFO) -> None:
        """Append a line to the output if ``level`` is shown."""
        if level >= self.level:
            self.out.append(line)

    def on_log(self, method: str, event: MutableMapping[str, Any]) -> None:
        """Turn a structlog event into an output line like ``INFO 1 became_leader term=1``."""
        level = _LEVEL_NAMES.get(method, logging.ERROR)
        if level < self.level:
            return
        node = event.get("node", "?")
        parts = [f"{k}={_fmt_value(v)}" for k, v in event.items() if k not in ("event", "node")]
        self.out.append(" ".join([method.upper(), str(node), str(event["event"]), *parts]))

    # -- topology

    def cut(self, a: str, b: str) -> bool:
        """Return whether the partition separates ``a`` from ``b``."""
        if self.groups is None:
            return False
        return not any(a in g and b in g for g in self.groups)

    def add_node(self, config: Config) -> None:
        """Add a fresh node with an empty log."""
        storage = MemoryStorage()
        self.nodes[config.id] = NodeState(RaftNode(config, storage), storage, config)

    def restart(self, nid: str) -> None:
        """Rebuild a node from its storage, as after a crash; its state machine restarts from
        the storage snapshot."""
        ns = self.nodes[nid]
        self.held.pop(nid, None)
        ns.node = RaftNode(ns.config, ns.storage)
        snap = ns.storage.snapshot()
        ns.applied = _decode_state(snap.data) if snap.index else []
        ns.applied_index = snap.index

    # -- moving things

    def process_ready(self, nid: str) -> Ready | None:
        """Handle one Ready of a node (persist, send, apply, advance); return it.

        A Ready held by :meth:`send_early` is finished instead of taking a new one.
        """
        ns = self.nodes[nid]
        held = self.held.pop(nid, None)
        if held is not None:
            self.emit(f"> {nid} persisted the Ready")
            self._finish_ready(nid, held)
            return held
        if not ns.node.has_ready():
            return None
        rd = ns.node.ready()
        self.emit(f"> {nid} handling Ready")
        self._describe_ready(rd)
        self._queue_msgs(rd.early_messages)
        self._finish_ready(nid, rd)
        return rd

    def send_early(self, nid: str) -> Ready | None:
        """Take a node's Ready and send its early messages only; hold the rest."""
        ns = self.nodes[nid]
        if nid in self.held:
            raise ValueError(f"{nid} already holds a Ready")
        if not ns.node.has_ready():
            return None
        rd = ns.node.ready()
        self.emit(f"> {nid} handling Ready (early messages only; persisting)")
        self._describe_ready(rd)
        self._queue_msgs(rd.early_messages)
        self.held[nid] = rd
        return rd

    def crash(self, nid: str) -> None:
        """Lose what a held Ready had not persisted, drop the node's inbound queue, restart."""
        if self.held.pop(nid, None) is not None:
            self.emit(f"> {nid} crashed before persisting its Ready")
        self.queue = [m for m in self.queue if m.to != nid]
        self.restart(nid)

    def _queue_msgs(self, msgs: tuple[Message, ...]) -> None:
        for m in msgs:
            if not self.cut(m.frm, m.to):
                self.queue.append(m)

    def _finish_ready(self, nid: str, rd: Ready) -> None:
        ns = self.nodes[nid]
        if rd.snapshot is not None:
            ns.storage.apply_snapshot(rd.snapshot)
            ns.applied = _decode_state(rd.snapshot.data)
            ns.applied_index = rd.snapshot.index
        ns.storage.append(rd.entries)
        if rd.hard_state is not None:
            ns.storage.set_hard_state(rd.hard_state)
        self._queue_msgs(rd.messages)
        for e in rd.committed:
            if e.index != ns.applied_index + 1:
                raise AssertionError(f"{nid} applied {e.index} after {ns.applied_index}")
            ns.applied_index = e.index
            if e.kind is EntryKind.NORMAL:
                ns.applied.append(e.data)
        ns.node.advance(rd)

    def _describe_ready(self, rd: Ready) -> None:
        e = self.emit
        if rd.soft_state is not None:
            s = rd.soft_state
            e(f"  Lead:{s.leader} State:{s.role.name} Term:{s.term}")
        if rd.hard_state is not None:
            h = rd.hard_state
            e(f"  HardState Term:{h.term} Vote:{h.vote} Commit:{h.commit}")
        if rd.snapshot is not None:
            e(f"  Snapshot {fmt_snapshot(rd.snapshot)}")
        if rd.entries:
            e("  Entries:")
            for x in rd.entries:
                e(f"  {fmt_entry(x)}")
        if rd.committed:
            e("  Committed:")
            for x in rd.committed:
                e(f"  {fmt_entry(x)}")
        if rd.early_messages:
            e("  Early messages:")
            for m in rd.early_messages:
                suffix = " (dropped: partition)" if self.cut(m.frm, m.to) else ""
                e(f"  {fmt_msg(m)}{suffix}")
        if rd.messages:
            e("  Messages:")
            for m in rd.messages:
                suffix = " (dropped: partition)" if self.cut(m.frm, m.to) else ""
                e(f"  {fmt_msg(m)}{suffix}")
        if rd.read_states:
            e("  ReadStates:")
            for r in rd.read_states:
                e(f"  Index:{r.index} Context:{r.context.decode(errors='replace')}")

    def deliver(self, nid: str, type_: MsgType | None = None) -> int:
        """Deliver the queued messages addressed to ``nid`` (optionally of one type)."""
        mine = [m for m in self.queue if m.to == nid and (type_ is None or m.type is type_)]
        if not mine:
            return 0
        ids = {id(m) for m in mine}
        self.queue = [m for m in self.queue if id(m) not in ids]
        self.emit(f"> {nid} receiving messages")
        for m in mine:
            self.emit(f"  {fmt_msg(m)}")
            self.nodes[nid].node.step(m)
        return len(mine)

    def stabilize(self, ids: list[str]) -> None:
        """Process Readies and deliver messages until nothing is left to do."""
        for _ in range(10_000):
            done = True
            for nid in ids:
                if self.process_ready(nid) is not None:
                    done = False
            for nid in ids:
                if self.deliver(nid):
                    done = False
            if done:
                return
        raise AssertionError("stabilize did not converge")

    def compact(self, nid: str, index: int) -> Snapshot:
        """Snapshot a node's state machine at ``index`` (its applied index) and compact."""
        ns = self.nodes[nid]
        if index != ns.applied_index:
            raise ValueError(f"interpreter snapshots only at the applied index {ns.applied_index}")
        snap = ns.node.compact(index, _encode_state(ns.applied))
        ns.storage.create_snapshot(snap)
        ns.storage.compact(index)
        return snap


def _encode_state(applied: list[bytes]) -> bytes:
    return b",".join(applied)


def _decode_state(data: bytes) -> list[bytes]:
    return data.split(b",") if data else []


# --------------------------------------------------------------------------- commands


@contextlib.contextmanager
def capture_logs_into(cluster: Cluster) -> Iterator[None]:
    """Route structlog events to ``cluster.on_log`` for the duration (and restore after)."""
    old = structlog.get_config()

    def processor(_logger: object, method: str, event: MutableMapping[str, Any]) -> str:
        cluster.on_log(method, event)
        raise structlog.DropEvent

    structlog.configure(
        processors=[processor],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        cache_logger_on_first_use=False,
    )
    try:
        yield
    finally:
        structlog.configure(**old)


_KV = re.compile(r"^([a-z-]+)=(.*)$")


def _parse_args(line: str) -> tuple[str, list[str], dict[str, str]]:
    # voters=(1,2,3) or voters=(1 2 3): keep parenthesised groups together.
    line = re.sub(r"\(([^)]*)\)", lambda m: "(" + m.group(1).replace(" ", ",") + ")", line)
    words = shlex.split(line)
    pos: list[str] = []
    kw: dict[str, str] = {}
    for w in words[1:]:
        m = _KV.match(w)
        if m:
            kw[m.group(1)] = m.group(2)
        else:
            pos.append(w)
    return words[0], pos, kw


def _parse_list(value: str) -> tuple[str, ...]:
    return tuple(x for x in value.strip("()").split(",") if x)


def _bool(value: str) -> bool:
    if value not in ("true", "false"):
        raise ValueError(f"expected true/false, got {value}")
    return value == "true"


class Interpreter:
    """Runs scenario commands against one :class:`Cluster` and returns their output."""

    def __init__(self) -> None:
        """Create an interpreter with an empty cluster, at log level info."""
        self.c = Cluster()

    def run(self, line: str) -> str:
        """Run one command line and return its output (``ok`` when empty)."""
        c = self.c
        c.out = []
        cmd, pos, kw = _parse_args(line)
        handler = getattr(self, "cmd_" + cmd.replace("-", "_"), None)
        if handler is None:
            raise ValueError(f"unknown command {cmd!r}")
        handler(pos, kw)
        return "\n".join(ln.rstrip() for ln in c.out) or "ok"

    def _all(self, pos: list[str]) -> list[str]:
        return pos or list(self.c.nodes)

    # -- setup and control

    def cmd_add_nodes(self, pos: list[str], kw: dict[str, str]) -> None:
        """Add nodes; see the module docstring for the options."""
        n = int(pos[0])
        start = len(self.c.nodes) + 1
        ids = [str(i) for i in range(start, start + n)]
        voters = _parse_list(kw["voters"]) if "voters" in kw else tuple(ids)
        for nid in ids:
            cfg = Config(
                id=nid,
                voters=voters,
                election_ticks=int(kw.get("election", "10")),
                heartbeat_ticks=int(kw.get("heartbeat", "1")),
                pre_vote=_bool(kw.get("prevote", "true")),
                check_quorum=_bool(kw.get("checkquorum", "true")),
                campaign_on_leader_loss=_bool(kw.get("leaderloss", "true")),
                max_inflight=int(kw.get("max-inflight", "256")),
                max_entries_per_msg=int(kw.get("max-entries", "256")),
                rng=FixedRandom(),
            )
            self.c.add_node(cfg)

    def cmd_log_level(self, pos: list[str], kw: dict[str, str]) -> None:
        """Set which output is shown."""
        self.c.level = _LEVELS[pos[0]]

    def cmd_partition(self, pos: list[str], kw: dict[str, str]) -> None:
        """Split the nodes into groups separated by ``|``; drop queued messages across."""
        groups: list[set[str]] = [set()]
        for w in pos:
            if w == "|":
                groups.append(set())
            else:
                groups[-1].add(w)
        rest = set(self.c.nodes) - set().union(*groups)
        groups.extend({r} for r in sorted(rest))
        self.c.groups = groups
        kept = []
        for m in self.c.queue:
            if self.c.cut(m.frm, m.to):
                self.c.emit(f"dropped: {fmt_msg(m)}")
            else:
                kept.append(m)
        self.c.queue = kept

    def cmd_heal(self, pos: list[str], kw: dict[str, str]) -> None:
        """Remove the partition."""
        self.c.groups = None

    def cmd_restart(self, pos: list[str], kw: dict[str, str]) -> None:
        """Rebuild nodes from storage."""
        for nid in pos:
            self.c.restart(nid)

    # -- inputs

    def cmd_campaign(self, pos: list[str], kw: dict[str, str]) -> None:
        """Start an election on a node."""
        self.c.nodes[pos[0]].node.campaign()

    def cmd_peer_down(self, pos: list[str], kw: dict[str, str]) -> None:
        """Tell a node its connection to a peer was lost: ``peer-down ID PEER``."""
        self.c.nodes[pos[0]].node.peer_down(pos[1])

    def cmd_propose(self, pos: list[str], kw: dict[str, str]) -> None:
        """Propose data on a node; print the index or the error."""
        try:
            index = self.c.nodes[pos[0]].node.propose(pos[1].encode())
        except ProposalDropped as exc:
            self.c.out.append(f"raised {type(exc).__name__}: {exc}")
        else:
            self.c.out.append(f"index={index}")

    def cmd_read_index(self, pos: list[str], kw: dict[str, str]) -> None:
        """Request a linearizable read."""
        try:
            self.c.nodes[pos[0]].node.read_index(pos[1].encode())
        except RaftError as exc:
            self.c.out.append(f"raised {type(exc).__name__}: {exc}")

    def cmd_transfer_leadership(self, pos: list[str], kw: dict[str, str]) -> None:
        """Ask a node to transfer leadership."""
        try:
            self.c.nodes[kw["from"]].node.transfer_leader(kw["to"])
        except RaftError as exc:
            self.c.out.append(f"raised {type(exc).__name__}: {exc}")

    def cmd_tick(self, pos: list[str], kw: dict[str, str]) -> None:
        """Tick a node N times."""
        for _ in range(int(pos[1])):
            self.c.nodes[pos[0]].node.tick()

    def cmd_tick_heartbeat(self, pos: list[str], kw: dict[str, str]) -> None:
        """Tick a node for one heartbeat interval."""
        ns = self.c.nodes[pos[0]]
        for _ in range(ns.config.heartbeat_ticks):
            ns.node.tick()

    def cmd_tick_election(self, pos: list[str], kw: dict[str, str]) -> None:
        """Tick a node for one (minimum) election timeout."""
        ns = self.c.nodes[pos[0]]
        for _ in range(ns.config.election_ticks):
            ns.node.tick()

    def cmd_process_ready(self, pos: list[str], kw: dict[str, str]) -> None:
        """Handle each node's Ready."""
        for nid in pos:
            self.c.process_ready(nid)

    def cmd_send_early(self, pos: list[str], kw: dict[str, str]) -> None:
        """Send a node's early messages and hold the rest of its Ready (fsync running)."""
        self.c.send_early(pos[0])

    def cmd_crash(self, pos: list[str], kw: dict[str, str]) -> None:
        """Crash nodes (losing a held Ready) and restart them from storage."""
        for nid in pos:
            self.c.crash(nid)

    def cmd_deliver_msgs(self, pos: list[str], kw: dict[str, str]) -> None:
        """Deliver queued messages to nodes."""
        type_ = MsgType[kw["type"]] if "type" in kw else None
        for nid in self._all(pos):
            self.c.deliver(nid, type_)

    def cmd_drop_msgs(self, pos: list[str], kw: dict[str, str]) -> None:
        """Drop queued messages addressed to nodes."""
        targets = set(self._all(pos))
        for m in self.c.queue:
            if m.to in targets:
                self.c.emit(f"dropped: {fmt_msg(m)}")
        self.c.queue = [m for m in self.c.queue if m.to not in targets]

    def cmd_stabilize(self, pos: list[str], kw: dict[str, str]) -> None:
        """Run until quiet."""
        self.c.stabilize(self._all(pos))

    def cmd_compact(self, pos: list[str], kw: dict[str, str]) -> None:
        """Snapshot and compact a node's log."""
        snap = self.c.compact(pos[0], int(pos[1]))
        self.c.out.append(f"snapshot {fmt_snapshot(snap)}")

    # -- queries (always shown)

    def cmd_raft_state(self, pos: list[str], kw: dict[str, str]) -> None:
        """Print one line per node."""
        for nid, ns in self.c.nodes.items():
            n = ns.node
            self.c.out.append(
                f"{nid}: {n.role.name} Term:{n.term} Lead:{n.leader} Vote:{n.vote} "
                f"Commit:{n.commit_index} Applied:{n.applied_index} Last:{n.last_index}"
            )

    def cmd_raft_log(self, pos: list[str], kw: dict[str, str]) -> None:
        """Print a node's log (after its snapshot)."""
        n = self.c.nodes[pos[0]].node
        if n.first_index > 1:
            self.c.out.append(f"snapshot {fmt_snapshot(self.c.nodes[pos[0]].storage.snapshot())}")
        ents = n.log_entries(n.first_index, n.last_index + 1)
        self.c.out.extend(fmt_entry(e) for e in ents)
        if not ents:
            self.c.out.append("log is empty")

    def cmd_status(self, pos: list[str], kw: dict[str, str]) -> None:
        """Print the leader's view of each follower."""
        n = self.c.nodes[pos[0]].node
        for peer, pr in n.progress().items():
            self.c.out.append(f"{peer}: {pr!r}")

    def cmd_applied(self, pos: list[str], kw: dict[str, str]) -> None:
        """Print a node's state machine."""
        ns = self.c.nodes[pos[0]]
        data = " ".join(d.decode() for d in ns.applied)
        self.c.out.append(f"applied={ns.applied_index} state=[{data}]")


# --------------------------------------------------------------------------- files


@attrs.frozen
class Block:
    """One scenario block: the text before it, its command, and its expected output."""

    preamble: tuple[str, ...]
    command: str
    expected: str
    line: int


def parse(text: str) -> tuple[list[Block], list[str]]:
    """Split a scenario file into blocks, and the trailing lines after the last block."""
    lines = text.splitlines()
    blocks: list[Block] = []
    pre: list[str] = []
    i = 0
    while i < len(lines):
        ln = lines[i]
        if not ln.strip() or ln.lstrip().startswith("#"):
            pre.append(ln)
            i += 1
            continue
        cmd_line = i + 1
        if i + 1 >= len(lines) or lines[i + 1] != "----":
            raise ValueError(f"line {cmd_line}: expected '----' after command {ln!r}")
        i += 2
        out: list[str] = []
        while i < len(lines) and lines[i].strip():
            out.append(lines[i])
            i += 1
        blocks.append(Block(tuple(pre), ln, "\n".join(out), cmd_line))
        pre = []
    return blocks, pre


def run_file(path: Path) -> tuple[list[Block], list[str], list[str]]:
    """Run a scenario file; return its blocks, trailing lines and the actual outputs."""
    blocks, trailing = parse(path.read_text())
    interp = Interpreter()
    actual: list[str] = []
    with capture_logs_into(interp.c):
        for b in blocks:
            try:
                actual.append(interp.run(b.command))
            except Exception as exc:
                raise AssertionError(f"{path.name}:{b.line}: {b.command!r} raised {exc!r}") from exc
    return blocks, trailing, actual


def render(blocks: list[Block], trailing: list[str], outputs: list[str]) -> str:
    """Write a scenario file back with new outputs."""
    lines: list[str] = []
    for b, out in zip(blocks, outputs, strict=True):
        lines.extend(b.preamble)
        lines.extend([b.command, "----", out])
    lines.extend(trailing)
    if not lines or lines[-1] != "":
        lines.append("")
    return "\n".join(lines)


__all__ = ["Cluster", "Interpreter", "fmt_entry", "fmt_msg", "render", "run_file"]

_ = Role  # re-exported for tests that inspect roles
