"""Isolated Thespian actor systems that leave no process behind (demo, tests, benchmarks).

Thespian traps this avoids: a TCP admin port still in use silently attaches to
the old admin, `logDefs=False` crashes multi-process actors, and an actor stuck
in a handler makes `shutdown()` give up and leak processes. Each system gets a
fresh port; after `shutdown()` any process left in the admin's OS session is
SIGKILLed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from thespian.actors import Actor, ActorAddress, ActorSystem, InvalidActorAddress

from ._process import child_pids, kill_tree, stat


class SessionProbe(Actor):  # type: ignore[misc]
    """Answers with the OS session id of its process: the admin daemon's session."""

    def receiveMessage(self, message: Any, sender: ActorAddress) -> None:
        if message == "sid":
            self.send(sender, os.getsid(0))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def session_pids(sid: int) -> list[int]:
    """Live (non-zombie) processes of OS session `sid`, other than the caller."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        fields = stat(int(entry))
        if fields is not None and int(fields[3]) == sid and fields[0] not in ("Z", "X"):
            pids.append(int(entry))
    return pids


def start_system(base: str, capabilities: Mapping[str, Any] | None = None,
                 ) -> tuple[ActorSystem, int | None]:
    """A new system and its admin's session id (None for simpleSystemBase: no processes).

    `capabilities` are the admin's (e.g. a convention member's); a TCP system gets
    a fresh `'Admin Port'` unless they name one.
    """
    capabilities = dict(capabilities or {})
    fresh_port = base == "multiprocTCPBase" and "Admin Port" not in capabilities
    for attempt in range(3):
        if fresh_port:
            capabilities["Admin Port"] = free_port()
        before = set(child_pids(os.getpid()))
        try:
            asys = ActorSystem(base, capabilities, logDefs=None, transientUnique=True)
            break
        except InvalidActorAddress:
            # On a loaded machine the new admin can miss Thespian's start-up wait (~11 s).
            # On a port of the caller's, asking again attaches to it once it listens; on a
            # fresh one (which another socket may have taken meanwhile) the admins this
            # attempt forked are ended and a new port is tried.
            if fresh_port:
                for admin in set(child_pids(os.getpid())) - before:
                    kill_tree(admin)
            if attempt == 2:
                raise
            time.sleep(0.5)
    if base == "simpleSystemBase":
        return asys, None
    probe = asys.createActor(SessionProbe)
    sid = asys.ask(probe, "sid", 10)
    if not isinstance(sid, int):
        asys.shutdown()
        raise RuntimeError(f"the actor system did not answer: {sid!r}")
    return asys, sid


def shutdown_system(asys: ActorSystem, sid: int | None, grace: float = 2.0) -> list[int]:
    """`shutdown()`, give the processes `grace` seconds to exit, then SIGKILL the rest.

    Returns the pids that had to be killed, once they are gone.
    """
    asys.shutdown()
    if sid is None:
        return []
    killed = _wait_empty(sid, grace)
    for pid in killed:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if _wait_empty(sid, grace):
        raise RuntimeError(f"processes of session {sid} survived SIGKILL: {session_pids(sid)}")
    return killed


def _wait_empty(sid: int, timeout: float) -> list[int]:
    """Wait for session `sid` to have no live process; the pids still alive at `timeout`."""
    deadline = time.monotonic() + timeout
    while (pids := session_pids(sid)) and time.monotonic() < deadline:
        time.sleep(0.02)
    return pids


@dataclass
class SystemRecord:
    """One isolated system: its admin's session (None: simpleSystemBase), and how its
    shutdown went (pids that had to be SIGKILLed, seconds it took; None until then)."""

    base: str
    sid: int | None
    killed: list[int] = field(default_factory=list)
    shutdown_seconds: float | None = None


#: Every system `isolated_system` started in this process, for checks at the end of a run.
RECORDS: list[SystemRecord] = []


@contextlib.contextmanager
def isolated_system(base: str = "multiprocTCPBase",
                    capabilities: Mapping[str, Any] | None = None) -> Iterator[ActorSystem]:
    """An actor system of `base`, shut down on exit with no process left behind."""
    asys, sid = start_system(base, capabilities)
    record = SystemRecord(base, sid)
    RECORDS.append(record)
    try:
        yield asys
    finally:
        started = time.perf_counter()
        record.killed = shutdown_system(asys, sid)
        record.shutdown_seconds = time.perf_counter() - started


def leftover_pids() -> list[int]:
    """Live processes of any system `isolated_system` started (none, when all is well)."""
    return [pid for record in RECORDS if record.sid is not None
            for pid in session_pids(record.sid)]


# ---- several admins on one machine: a Thespian convention on loopback ---------------------


@dataclass
class Admin:
    """One admin of an `isolated_convention`: its system handle, port and record."""

    system: ActorSystem
    port: int
    capabilities: dict[str, Any]
    record: SystemRecord
    gone: bool = False

    @property
    def sid(self) -> int:
        assert self.record.sid is not None
        return self.record.sid


@dataclass
class Convention:
    """A leader and its members, all multiprocTCPBase admins on 127.0.0.1 (docs/scale-out.md)."""

    leader: Admin
    members: list[Admin] = field(default_factory=list)

    def add_member(self, capabilities: Mapping[str, Any], timeout: float = 10.0) -> Admin:
        """Start a member admin and wait until the leader has registered it."""
        from ._placement import members

        caps = {**capabilities, "Admin Port": free_port(),
                "Convention Address.IPv4": ("127.0.0.1", self.leader.port)}
        asys, sid = start_system("multiprocTCPBase", caps)
        record = SystemRecord("multiprocTCPBase", sid)
        RECORDS.append(record)
        admin = Admin(asys, caps["Admin Port"], caps, record)
        self.members.append(admin)
        deadline = time.monotonic() + timeout
        while True:
            known = members(self.leader.system, timeout)
            if known is not None and any(admin_port(a) == admin.port for a in known.present):
                return admin
            if time.monotonic() > deadline:
                raise RuntimeError(f"member on port {admin.port} did not join the convention")
            time.sleep(0.02)

    def stop_member(self, admin: Admin) -> None:
        """Shut a member down gracefully: it deregisters and its actors get ActorExitRequest."""
        started = time.perf_counter()
        admin.gone = True
        admin.record.killed = shutdown_system(admin.system, admin.record.sid)
        admin.record.shutdown_seconds = time.perf_counter() - started

    def kill_member(self, admin: Admin) -> list[int]:
        """SIGKILL every process of a member (admin, logger, actors) at once: a host that died.

        All are frozen before any dies (`kill_tree` from the admin, the session's leader):
        killed one by one, a Pachka server outliving its admin by a moment would get
        SIGTERM from its admin's death and start delivering its queue.
        """
        admin.gone = True
        pids = session_pids(admin.sid)
        kill_tree(admin.sid)
        for pid in session_pids(admin.sid):  # none, unless one left the admin's tree
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if _wait_empty(admin.sid, 5.0):
            raise RuntimeError(f"member processes survived SIGKILL: {session_pids(admin.sid)}")
        return pids


def admin_port(address: Any) -> int | None:
    """The TCP port in an admin address (or its str), None when there is none."""
    text = str(address)  # e.g. "ActorAddr-(T|:52875)" on multiprocTCPBase
    digits = text.rsplit(":", 1)[-1].rstrip(")")
    return int(digits) if digits.isdigit() else None


#: What every admin of an `isolated_convention` is started with (the test process too).
CONVENTION_ENVIRONMENT = {"THESPIAN_BASE_IPADDR": "127.0.0.1",
                          "CONVENTION_REREGISTRATION_PERIOD": "0:05"}


@contextlib.contextmanager
def isolated_convention(leader: Mapping[str, Any] | None = None,
                        members: tuple[Mapping[str, Any], ...] = (),
                        environment: Mapping[str, str] | None = None) -> Iterator[Convention]:
    """A leader admin and member admins with the given capabilities, on fresh loopback ports.

    `environment` (default `CONVENTION_ENVIRONMENT`) is set in this process while
    the convention runs, so the admins forked from it share it. On exit, members
    still up are shut down, then the leader; leftover processes are SIGKILLed.
    """
    from ._placement import sync_reregistration_period

    env = dict(CONVENTION_ENVIRONMENT if environment is None else environment)
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    sync_reregistration_period()
    convention: Convention | None = None
    try:
        caps = {**(leader or {}), "Admin Port": free_port()}
        asys, sid = start_system("multiprocTCPBase", caps)
        record = SystemRecord("multiprocTCPBase", sid)
        RECORDS.append(record)
        convention = Convention(Admin(asys, caps["Admin Port"], caps, record))
        for member in members:
            convention.add_member(member)
        yield convention
    finally:
        if convention is not None:
            for admin in [m for m in convention.members if not m.gone]:
                convention.stop_member(admin)
            convention.stop_member(convention.leader)
        for name, old in saved.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old
        sync_reregistration_period_default()


def sync_reregistration_period_default() -> None:
    """Back to what the environment says now (Thespian's default when unset)."""
    from datetime import timedelta

    import thespian.system.admin.convention as convention

    from ._placement import sync_reregistration_period

    if not os.environ.get("CONVENTION_REREGISTRATION_PERIOD"):
        convention.CONVENTION_REREGISTRATION_PERIOD = timedelta(minutes=7, seconds=22)
    else:
        sync_reregistration_period()
