"""`PachkaPool`: N Pachka servers (partitions) behind one handle, routed by a key.

One server is one actor: one process, one core. A pool runs N of them, each
possibly on another convention member, and routes every message to one of them:
round robin by default, or by a stable hash of `key(message)`, so that one key's
messages go to one server and keep their order (Broadway's `partition_by`).
Each partition is an ordinary `Pachka` handle, so overload stays exact per
partition: `Overloaded` means that partition's queue is full.

Hosts fail (docs/scale-out.md). The pool reads the convention leader's view of
its members (`ConventionWatcher`) at most every `check_interval` seconds; a
partition whose host left is reported by `status()` and refused by the send
calls with `PartitionUnreachable` at once, instead of each call waiting `ask_timeout`.
"""

from __future__ import annotations

import functools
import itertools
import logging
import threading
import time
import zlib
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from thespian.actors import ActorAddress, ActorSystem

from ._ask import ask
from ._base import Base, system_key
from ._courier import system_lock
from ._placement import (
    WATCHER_NAME,
    ConventionWatcher,
    GetMembers,
    Members,
    host_admin,
)
from ._restart import Restart
from .config import (
    DEFAULT_LINGER,
    ChildSpec,
    HandleOptions,
    PachkaConfig,
    Requirements,
    parse_requirements,
)
from .errors import ActorTimeout, ConfigError, NotStarted, PachkaError, PartitionUnreachable
from .messages import GetStatus, ServerStatus
from .pachka import Pachka
from .supervisor import Supervisor

log = logging.getLogger(__name__)

#: `key(message)`: which stream a message belongs to; messages of one key keep their order.
KeyFunction = Callable[[Any], Any]


def partition_for(key: Any, partitions: int) -> int:
    """The partition of `key`: CRC-32 of its bytes modulo `partitions`.

    The same in every process and run (Python's `hash()` of a str is salted per
    process). The bytes: a str's UTF-8, bytes as they are, anything else its
    `repr()`, so a key should have a stable repr: str, int, bytes, tuples of them.
    """
    if isinstance(key, str):
        data = key.encode()
    elif isinstance(key, bytes | bytearray):
        data = bytes(key)
    else:
        data = repr(key).encode()
    return zlib.crc32(data) % partitions


@dataclass(frozen=True)
class PartitionStatus:
    """One partition as `PachkaPool.status()` found it.

    `status` is None when the partition is `unreachable` (the reason). Then
    `last_seen` is its last status read while reachable: what its host held
    then (`at_risk` messages) is lost unless the server drained it.
    """

    partition: int
    address: ActorAddress | None
    host: str | None
    status: ServerStatus | None
    unreachable: str | None = None
    last_seen: ServerStatus | None = None

    @property
    def at_risk(self) -> int:
        """Messages the host held when last seen: queued, in the batch, and reserved."""
        seen = self.last_seen
        return 0 if seen is None else seen.queue_length + seen.batch_length + seen.reserved


def _partition_requirements(requirements: Any, partitions: int) -> list[Requirements | None]:
    """One mapping (or None) for all partitions, or a sequence of one per partition."""
    if requirements is None or isinstance(requirements, Mapping):
        return [parse_requirements("requirements", requirements)] * partitions
    if isinstance(requirements, str | bytes) or not isinstance(requirements, Sequence):
        raise ConfigError("requirements", f"expected a dict, None, or a sequence of one per "
                                          f"partition, got {requirements!r}")
    if len(requirements) != partitions:
        raise ConfigError("requirements", f"{len(requirements)} given for {partitions} "
                                          f"partitions")
    return [parse_requirements(f"requirements[{i}]", r) for i, r in enumerate(requirements)]


def _check_pool(partitions: Any, key: Any, options: Mapping[str, Any]) -> None:
    if isinstance(partitions, bool) or not isinstance(partitions, int) or partitions < 1:
        raise ConfigError("partitions", f"expected an integer >= 1, got {partitions!r}")
    if key is not None and not callable(key):
        raise ConfigError("key", f"expected a function of the message, or None, got {key!r}")
    if options.get("name") is not None:
        raise ConfigError("name", "a pool's servers are found through the pool; "
                                  "one globalName cannot name N servers")


class PachkaPool:
    """A handle to N Pachka servers, for one producing thread.

    `send_message` routes each message to one partition; `send_messages`,
    `flush`, `status`, `stop` and `close` act on every partition. A pool started
    with `start` owns its servers; one found with `connect` belongs to its
    supervisor (`child_spec`), and `refresh` follows that supervisor's restarts.
    """

    def __init__(self, system: ActorSystem, partitions: Sequence[Pachka | None], *,
                 key: KeyFunction | None = None, supervisor: Supervisor | None = None,
                 handle_options: HandleOptions | None = None,
                 check_interval: float = 1.0) -> None:
        self.system = system
        self.key = key
        self.supervisor = supervisor
        self.handle_options = handle_options or HandleOptions()
        self.check_interval = check_interval
        self.partitions: list[Pachka | None] = list(partitions)
        self._round_robin = itertools.count()
        self._remote = not Base.of(system).inline
        self._hosts: list[str | None] = [self._host_of(p) for p in self.partitions]
        self._unreachable: dict[int, str] = {}  # gone until `refresh`: host left, not running
        self._last_seen: dict[int, ServerStatus] = {}
        self._watcher: ActorAddress | None = None
        self._left: dict[str, float] = {}  # admins the leader dropped, seconds ago
        self._checked = 0.0

    # ---- starting -------------------------------------------------------------------------

    @classmethod
    def start(cls, *, system: ActorSystem, partitions: int, key: KeyFunction | None = None,
              requirements: Mapping[str, Any] | Sequence[Mapping[str, Any] | None] | None = None,
              ask_timeout: float | None = 60.0, linger: float | None = DEFAULT_LINGER,
              buffer_size: int = 1000, check_interval: float = 1.0,
              **options: Any) -> PachkaPool:
        """Start `partitions` servers with the same `options` (docs/options.md), in order.

        `requirements`: one dict for every partition, or a sequence of one (or None)
        per partition, placing each server on a convention member. If one fails to
        start, those already started are stopped and the error raised.
        """
        _check_pool(partitions, key, options)
        placements = _partition_requirements(requirements, partitions)
        PachkaConfig.parse(options)
        handle = HandleOptions(ask_timeout, linger, buffer_size)
        started: list[Pachka] = []
        try:
            for placement in placements:
                started.append(Pachka.start(system=system, ask_timeout=ask_timeout,
                                            linger=linger, buffer_size=buffer_size,
                                            requirements=placement, **options))
        except BaseException:
            for server in reversed(started):
                try:
                    server.stop(ask_timeout)
                except Exception:
                    log.exception("could not stop %s after a failed pool start", server)
            raise
        return cls(system, started, key=key, handle_options=handle,
                   check_interval=check_interval)

    @staticmethod
    def child_spec(*, id: Hashable, partitions: int,
                   requirements: Mapping[str, Any] | Sequence[Mapping[str, Any] | None]
                   | None = None, restart: Restart | str = Restart.PERMANENT,
                   shutdown: float | timedelta | str | None = None,
                   partition_shutdown: float | timedelta | str | None = 5.0,
                   max_restarts: int = 3, max_seconds: float = 5.0,
                   **options: Any) -> ChildSpec:
        """A supervisor child: a nested supervisor whose children are the servers, ids 0..N-1.

        The nested supervisor runs beside its parent; each server where its
        requirements place it. A server that exits (its host shut down, or left
        the convention) is restarted on a member that meets its requirements, if
        any. Reach the pool with `PachkaPool.connect(system, <nested supervisor>)`.
        """
        _check_pool(partitions, None, options)
        placements = _partition_requirements(requirements, partitions)
        children = [Pachka.child_spec(id=i, shutdown=partition_shutdown, requirements=placement,
                                      **options) for i, placement in enumerate(placements)]
        return Supervisor.child_spec(id=id, children=children, max_restarts=max_restarts,
                                     max_seconds=max_seconds, restart=restart,
                                     shutdown=shutdown)

    @classmethod
    def connect(cls, system: ActorSystem, supervisor: Supervisor | ActorAddress, *,
                key: KeyFunction | None = None, ask_timeout: float | None = 60.0,
                linger: float | None = DEFAULT_LINGER, buffer_size: int = 1000,
                check_interval: float = 1.0) -> PachkaPool:
        """A handle to the pool run by `supervisor` (the one `child_spec` made)."""
        if key is not None and not callable(key):
            raise ConfigError("key", f"expected a function of the message, or None, got {key!r}")
        options = HandleOptions(ask_timeout, linger, buffer_size)
        if not isinstance(supervisor, Supervisor):
            supervisor = Supervisor(system, supervisor, ask_timeout=ask_timeout)
        pool = cls(system, [], key=key, supervisor=supervisor, handle_options=options,
                   check_interval=check_interval)
        pool.refresh()
        if not pool.partitions:
            raise NotStarted(f"{supervisor} supervises no partitions")
        return pool

    def _handle(self, address: ActorAddress) -> Pachka:
        o = self.handle_options
        return Pachka(self.system, address, ask_timeout=o.ask_timeout, linger=o.linger,
                      buffer_size=o.buffer_size)

    def refresh(self) -> None:
        """Read the partitions' current addresses from the supervisor (after a restart)."""
        if self.supervisor is None:
            return
        children = sorted(((child_id, address) for child_id, address, _ in
                           self.supervisor.which_children() if isinstance(child_id, int)),
                          key=lambda child: child[0])
        old = self.partitions
        self.partitions = [None] * len(children)
        self._hosts = [None] * len(children)
        for i, (_, address) in enumerate(children):
            previous = old[i] if i < len(old) else None
            if previous is not None and previous.address == address:
                self.partitions[i] = previous
                self._hosts[i] = self._host_of(previous)
                continue
            if previous is not None:
                _close_later(previous)
            self._unreachable.pop(i, None)
            if address is None:
                self._unreachable[i] = "not running (its supervisor is restarting it)"
            else:
                self.partitions[i] = self._handle(address)
                self._hosts[i] = self._host_of(self.partitions[i])
        self._checked = 0.0

    def _host_of(self, partition: Pachka | None) -> str | None:
        """The admin its server runs on, as a str (None where that cannot be asked)."""
        if partition is None or not self._remote:
            return None
        timeout = self._short_timeout()
        with self._endpoint():
            admin = host_admin(self.system, partition.address, timeout)
        return None if admin is None else str(admin)

    def _endpoint(self) -> threading.RLock:
        """The program's endpoint is shared with the handles' couriers: one caller at a time."""
        return system_lock(system_key(self.system))

    def _short_timeout(self) -> float:
        ask_timeout = self.handle_options.ask_timeout
        return 5.0 if ask_timeout is None else min(ask_timeout, 5.0)

    # ---- routing --------------------------------------------------------------------------

    def partition_of(self, message: Any) -> int:
        """The partition `send_message` sends `message` to (round robin advances per call)."""
        if self.key is None:
            return next(self._round_robin) % len(self.partitions)
        return partition_for(self.key(message), len(self.partitions))

    def send_message(self, message: Any) -> None:
        """Queue one message on its partition; `Overloaded` when that partition is full,
        `PartitionUnreachable` when its host is known to be gone or did not answer in time."""
        index = self.partition_of(message)
        self._call(index, lambda p: p.send_message(message))

    def send_messages(self, messages: Iterable[Any]) -> int:
        """Queue what fits of `messages` on their partitions; how many were accepted.

        Each partition accepts a prefix of its share, in order; a partition that
        refuses the rest does not stop the others. `PartitionUnreachable` (before anything is
        sent) when a partition needed is known to be gone.
        """
        shares: dict[int, list[Any]] = {}
        for message in messages:
            shares.setdefault(self.partition_of(message), []).append(message)
        self._check_members()
        for index in shares:
            self._reachable(index)
        accepted = 0
        for index, share in sorted(shares.items()):
            accepted += self._call(index, functools.partial(Pachka.send_messages,
                                                            messages=share))
        return accepted

    def _call(self, index: int, call: Callable[[Pachka], Any]) -> Any:
        self._check_members()
        partition = self._reachable(index)
        started = time.monotonic()
        try:
            return call(partition)
        except ActorTimeout as exc:
            # Not remembered: the next call tries again (a dead host is remembered once
            # the convention reports it).
            raise PartitionUnreachable(index, _silence(started, partition.ask_timeout)) from exc

    def _reachable(self, index: int) -> Pachka:
        partition = self.partitions[index]
        if index in self._unreachable or partition is None:
            raise PartitionUnreachable(index, self._unreachable.get(index, "not running"))
        return partition

    def _check_members(self, force: bool = False) -> Members | None:
        """Every `check_interval` s: a partition whose host left the convention and whose
        server does not answer either is marked unreachable until `refresh`.

        The leader's word alone is not enough: Thespian 4.0.1 members were measured
        not to re-register, so the leader drops live members too (docs/scale-out.md).
        """
        now = time.monotonic()
        if not self._remote or (not force and now - self._checked < self.check_interval):
            return None
        self._checked = now
        try:
            with self._endpoint():
                if self._watcher is None:
                    self._watcher = self.system.createActor(ConventionWatcher,
                                                            globalName=WATCHER_NAME)
                members = ask(self.system, self._watcher, GetMembers(), Members,
                              self._short_timeout())
        except ActorTimeout:
            log.warning("the convention watcher did not answer; host failures go unnoticed")
            return None
        self._left = members.left
        for index, host in enumerate(self._hosts):
            if host in members.left and index not in self._unreachable:
                self._status_of(index)
        return members

    def _status_of(self, index: int) -> ServerStatus | str:
        """The partition's status, or why it is unreachable (remembered when its host left)."""
        partition = self.partitions[index]
        reason = self._unreachable.get(index)
        if reason is not None or partition is None:
            return reason or "not running"
        timeout = self._short_timeout()
        started = time.monotonic()
        try:
            with self._endpoint():
                status = ask(self.system, partition.address, GetStatus(), ServerStatus,
                             timeout)
        except ActorTimeout:
            reason = _silence(started, timeout)
            host = self._hosts[index]
            if host is not None and host in self._left:
                reason = (f"its host admin {host} left the convention "
                          f"{self._left[host]:.1f} s ago, and its server gives {reason}")
                self._unreachable[index] = reason
            return reason
        self._last_seen[index] = status
        return status

    # ---- over all partitions --------------------------------------------------------------

    def flush(self) -> None:
        """Ship every partition's buffer; the first error once all reachable ones are done."""
        self._each(lambda p: p.flush())

    def close(self) -> None:
        """Ship what is buffered and end the shipper threads; the servers run on."""
        self._each(lambda p: p.close())

    def stop(self, timeout: float | None = None) -> None:
        """Drain and stop every partition, in order (each wait bounded by `timeout`).

        A pool from `connect` belongs to its supervisor: stop it there
        (`terminate_child`), or the supervisor would restart its servers.
        """
        if self.supervisor is not None:
            raise PachkaError("this pool is supervised: stop it through its supervisor")
        self._each(lambda p: p.stop(timeout))

    def _each(self, call: Callable[[Pachka], None]) -> None:
        self._check_members()
        errors: list[BaseException] = []
        for index in range(len(self.partitions)):
            try:
                call(self._reachable(index))
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]

    def status(self) -> list[PartitionStatus]:
        """Every partition's status; an unreachable one says why, and what it last held.

        Asked without shipping the handles' buffers first (a dead partition would
        hold that up): messages still lingering in this process are not counted.
        """
        self._check_members(force=True)
        found = []
        for index, partition in enumerate(self.partitions):
            address = None if partition is None else partition.address
            answer = self._status_of(index)
            status, reason = (None, answer) if isinstance(answer, str) else (answer, None)
            found.append(PartitionStatus(index, address, self._hosts[index], status, reason,
                                         self._last_seen.get(index)))
        return found

    def __len__(self) -> int:
        return len(self.partitions)

    def __repr__(self) -> str:
        return f"PachkaPool({len(self.partitions)} partitions)"


def _silence(started: float, timeout: float | None) -> str:
    """Why an ask failed: a refused connection (a dead process on a live host) fails at once."""
    return (f"no answer (gave up after {time.monotonic() - started:.1f} s; limit "
            f"{timeout} s)")


def _close_later(handle: Pachka) -> None:
    """Close a replaced partition's handle without waiting on a server that may be gone."""
    def close() -> None:
        try:
            handle.close()
        except Exception:
            log.exception("could not ship what was buffered for the replaced %s", handle)

    threading.Thread(target=close, daemon=True, name=f"pachka-close-{handle.address}").start()
