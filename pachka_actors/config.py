"""What users configure: a Pachka server, a handle, a supervisor and its child specs.

Each is a frozen dataclass validated when it is made (see `_options`), so a bad
value is refused at the call that gave it, naming the option, before any actor
starts; and the tables of docs/options.md are generated from the same schemas.
"""

from __future__ import annotations

import builtins
import dataclasses
import enum
import inspect
import math
import os
import textwrap
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Final, Literal, TypeAlias, TypeVar

from ._options import (
    Option,
    build,
    integer,
    one_of,
    picklable,
    positive_int,
    seconds,
    table,
    timeout,
    validate_fields,
)
from ._restart import Restart, Strategy
from .errors import ConfigError
from .sink import Sink

#: How the server schedules its timers: real Thespian wakeups, or none at all so that
#: a test fires each timer itself by sending `FireTimer` (Pachka's tests stub the timer too).
Timers = Literal["wakeup", "manual"]

#: When the journal is synced (`journal_sync`): before each acknowledgement leaves, at most
#: this many seconds after, or when the kernel writes back (~30 s on Linux).
JournalSync = float | Literal["always", "os"]

#: Seconds a buffered message may wait in the producing process (Kafka's linger.ms idea).
DEFAULT_LINGER = 0.005

F = TypeVar("F", bound=Callable[..., Any])


def _name(name: str, value: Any) -> str | None:
    if value is not None and (not isinstance(value, str) or not value):
        raise ConfigError(name, f"expected a non-empty string or None, got {value!r}")
    return value


def _meter_provider(name: str, value: Any) -> Callable[[], Any] | None:
    if value is not None and not callable(value):
        raise ConfigError(name, f"expected None or a callable returning a MeterProvider, "
                                f"got {value!r}")
    return picklable(name, value)  # type: ignore[no-any-return]


def _spill_path(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str | os.PathLike) or not os.fspath(value):
        raise ConfigError(name, f"expected a file path or None, got {value!r}")
    path = os.path.abspath(os.fspath(value))
    if not os.path.isdir(os.path.dirname(path)):
        raise ConfigError(name, f"the directory of {path} does not exist")
    return path


def _journal_sync(name: str, value: Any) -> JournalSync:
    if value in ("always", "os"):
        return value  # type: ignore[no-any-return]
    if isinstance(value, str) or seconds(name, value) == 0:
        raise ConfigError(name, f"expected 'always', 'os' or seconds > 0, got {value!r}")
    return seconds(name, value)


def _journal_max_bytes(name: str, value: Any) -> int | None:
    return None if value is None else integer(4096)(name, value)


def _timers(name: str, value: Any) -> Timers:
    if value not in ("wakeup", "manual"):
        raise ConfigError(name, f"expected 'wakeup' or 'manual', got {value!r}")
    return value  # type: ignore[no-any-return]


def _sink(name: str, value: Any) -> Sink:
    """A Sink subclass is instantiated here, once, so every exporter gets the same instance."""
    if isinstance(value, type) and issubclass(value, Sink):
        try:
            value = value()
        except Exception as exc:
            raise ConfigError(name, f"could not instantiate {value.__qualname__}: {exc!r}") from exc
    if not isinstance(value, Sink):
        raise ConfigError(name, f"required: a Sink subclass or instance, got {value!r}")
    if type(value).send_batch is Sink.send_batch:
        raise ConfigError(name, f"{type(value).__qualname__} does not define send_batch")
    return picklable(name, value)  # type: ignore[no-any-return]


def _export_timeout(name: str, value: Any) -> float | None:
    parsed = timeout(name, value)
    if parsed == 0:
        raise ConfigError(name, "must be > 0 seconds (0 would kill every export at once); "
                                "None: no limit")
    return parsed


def _optional_positive(name: str, value: Any) -> int | None:
    if value is None:
        return None
    try:
        return positive_int(name, value)
    except ConfigError:
        raise ConfigError(name, f"expected an integer >= 1, or None for no limit, "
                                f"got {value!r}") from None


SERVER_OPTIONS: tuple[Option, ...] = (
    Option("sink", "Sink subclass or instance",
           "Receives the batches. A class is instantiated once by the library; the instance "
           "is pickled to every exporter actor, so it must be picklable.", _sink),
    Option("name", "str or None",
           "Thespian `globalName` of the server, for `Pachka.connect(system, name)`.", _name),
    Option("server_value", "any picklable value",
           "Passed to every sink callback, e.g. to tell servers sharing a sink apart.",
           picklable),
    Option("max_batch_size", "int > 0",
           "A batch is exported as soon as this many messages are queued; no batch is larger.",
           positive_int),
    Option("critical_queue_size", "int > 0",
           "Queued messages (not counting the batch being exported) at which new messages are "
           "refused with `Overloaded`.", positive_int),
    Option("max_batch_bytes", "int > 0 or None",
           "Beyond Pachka: a hard ceiling on a batch's bytes, as `Sink.message_size` measures "
           "them: a batch goes out as soon as the next message would not fit, and a message "
           "larger than this is refused at the call that sent it "
           "(`pachka_actors.errors.MessageTooLarge`), never queued. None: batches are "
           "bounded in count only.", _optional_positive),
    Option("critical_queue_bytes", "int > 0 or None",
           "Beyond Pachka: `critical_queue_size` in bytes: queued bytes (with the bytes "
           "granted to lingering handles) beyond which messages are refused with "
           "`Overloaded` (`limit` says which limit), exactly. None: no limit in bytes.",
           _optional_positive),
    Option("max_batch_delay", "seconds (float or timedelta) or None",
           "Time from the first message queued while no export runs until what is queued "
           "is exported (the batch timer); None: only full batches go out (so "
           "`critical_queue_size` and `critical_queue_bytes` may not be below a batch).",
           timeout),
    Option("export_timeout", "seconds (float or timedelta) or None",
           "Longest time `send_batch` may run; past it the exporter is killed and the batch "
           "retried with reason `\"killed\"`. None: no limit.", _export_timeout),
    Option("batches_per_exporter", "int > 0 or None",
           "Beyond Pachka: batches one exporter process serves in turn before it retires "
           "(its sink's `setup` runs once before them, `teardown` after); None: no limit. "
           "One whose batch failed, was killed or that exited serves no more. 1: a new "
           "exporter per batch, as Pachka.", _optional_positive),
    Option("credit_timeout", "seconds (float or timedelta) or None",
           "How long room reserved for a producer's buffer (see `linger`) stays reserved "
           "unused; a stopping server waits up to this long for promised messages.",
           timeout),
    Option("shutdown_timeout", "seconds (float or timedelta) or None",
           "Bound on finishing after a bare `ActorExitRequest` (what `ActorSystem.shutdown()` "
           "sends without `stop()`): exports keep `export_timeout`; what is not delivered "
           "within it goes to `drain_on_terminate`, else is logged lost at ERROR with its "
           "count. The default stays under Thespian's 10 s shutdown wait.", timeout),
    Option("timers", "'wakeup' or 'manual'",
           "'manual' schedules no wakeups: tests fire each timer by sending `FireTimer`.",
           _timers),
    Option("spill_path", "file path or None",
           "Beyond Pachka: an SQLite file where what `shutdown_timeout` leaves undelivered "
           "(and `drain_on_terminate` does not take) is written in one transaction; a server "
           "started later with the same path sends it first, in order. None: reported lost.",
           _spill_path),
    Option("journal_path", "file path or None",
           "Beyond Pachka: a crash journal. Every message the server acknowledges is written "
           "there first (one write per shipment), and every delivered batch checkpointed; a "
           "server started on the same file (or restarted by its supervisor) sends what was "
           "not delivered first, in order, under the same batch ids. Covers `spill_path`'s "
           "case too (the two exclude each other). Two servers on one file are refused. "
           "None: what a killed server held is lost (docs/shutdown.md).", _spill_path),
    Option("journal_sync", "'always', seconds (float) or 'os'",
           "When journal writes are synced to disk (`fdatasync`): 'always' before each "
           "acknowledgement leaves; seconds: at most this long after; 'os': when the kernel "
           "writes back. A write survives the death of the server's process in every case; "
           "this decides a power loss.", _journal_sync),
    Option("journal_max_bytes", "int >= 4096 or None",
           "Size at which the journal, compacted, refuses new messages with `Overloaded` "
           "(messages promised to handles' buffers are still taken). None: no limit.",
           _journal_max_bytes),
    Option("meter_provider", "picklable callable returning a MeterProvider, or None",
           "Where the OpenTelemetry metrics go (extra `otel`), called in the server's process; "
           "None: the global provider that process inherited (see docs/metrics.md).",
           _meter_provider),
)


@dataclass(frozen=True)
class PachkaConfig:
    """Validated options of one Pachka server; travels to the server actor in `StartServer`."""

    sink: Sink
    name: str | None = None
    server_value: Any = None
    max_batch_size: int = 500
    critical_queue_size: int = 10_000
    max_batch_bytes: int | None = None
    critical_queue_bytes: int | None = None
    max_batch_delay: float | None = 5.0
    export_timeout: float | None = 10.0
    batches_per_exporter: int | None = 1
    credit_timeout: float | None = 10.0
    shutdown_timeout: float | None = 8.0
    timers: Timers = "wakeup"
    spill_path: str | None = None
    journal_path: str | None = None
    journal_sync: JournalSync = "always"
    journal_max_bytes: int | None = None
    meter_provider: Callable[[], Any] | None = None

    def __post_init__(self) -> None:
        validate_fields(self, SERVER_OPTIONS)
        if self.spill_path is not None and self.journal_path is not None:
            raise ConfigError("spill_path", "the journal (journal_path) keeps what spill_path "
                                            "would: give one of them")
        if self.max_batch_delay is None:  # a batch then goes out only once it is full
            for queue, batch in (("critical_queue_size", "max_batch_size"),
                                 ("critical_queue_bytes", "max_batch_bytes")):
                if (getattr(self, queue) or math.inf) < (getattr(self, batch) or 0):
                    raise ConfigError(queue, f"below {batch}={getattr(self, batch)} with "
                                             f"max_batch_delay=None: no batch would ever fill, "
                                             f"and nothing would be exported until stop()")

    @classmethod
    def parse(cls, options: Mapping[str, Any], also: Sequence[Option] = ()) -> PachkaConfig:
        """From keyword options; raises `ConfigError` naming the first bad or unknown one
        (`also`: the handle's options, which `Pachka.start` takes too)."""
        return build(cls, SERVER_OPTIONS, {"sink": None, **options}, also)


HANDLE_OPTIONS: tuple[Option, ...] = (
    Option("ask_timeout", "seconds (float or timedelta) or None",
           "How long a call of the handle waits for the server's answer before "
           "`ActorTimeout`; None: forever.", timeout),
    Option("linger", "seconds (float or timedelta) or None",
           "How long `send_message` may keep a message in the producer's buffer before it "
           "is shipped; None: one round trip per message. On simpleSystemBase the buffer "
           "ships at the next call into the system after `linger`.", timeout),
    Option("buffer_size", "int > 0",
           "Messages reserved and shipped together by a lingering handle.", positive_int),
)


@dataclass(frozen=True)
class HandleOptions:
    """Validated options of a `Pachka` handle (they stay in the producer's process)."""

    ask_timeout: float | None = 60.0
    linger: float | None = DEFAULT_LINGER
    buffer_size: int = 1000

    def __post_init__(self) -> None:
        validate_fields(self, HANDLE_OPTIONS)

    @classmethod
    def parse(cls, options: Mapping[str, Any]) -> HandleOptions:
        """From keyword options; raises `ConfigError` naming the first bad or unknown one."""
        return build(cls, HANDLE_OPTIONS, options)


def with_options(*schemas: tuple[type, Sequence[Option]]) -> Callable[[F], F]:
    """Show the options of `schemas` in `help()` and `inspect.signature`: the function's
    `**options` become keyword-only parameters with the dataclasses' defaults (the
    schema is the one source), and the options' docs end its docstring."""
    def decorate(function: F) -> F:
        signature = inspect.signature(function)
        parameters = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
        docs = [inspect.cleandoc(function.__doc__ or ""), "", "Options:"]
        for cls, schema in schemas:
            defaults = {f.name: f.default for f in dataclasses.fields(cls)}
            for option in schema:
                default = defaults.get(option.name, dataclasses.MISSING)
                parameters.append(inspect.Parameter(
                    option.name, inspect.Parameter.KEYWORD_ONLY,
                    default=inspect.Parameter.empty if default is dataclasses.MISSING
                    else default))
                docs.append(textwrap.fill(f"{option.name} ({option.type_doc}): {option.doc}",
                                          88, initial_indent="  ", subsequent_indent="    "))
        vars(function)["__signature__"] = signature.replace(parameters=parameters)
        function.__doc__ = "\n".join(docs)
        return function
    return decorate


def options_table() -> str:
    """The Markdown tables of docs/options.md: server options, then handle options."""
    return (table(PachkaConfig, SERVER_OPTIONS) + "\nHandle options (`Pachka.start`, "
            "`Pachka.connect`):\n\n" + table(HandleOptions, HANDLE_OPTIONS))


# ---- placement (docs/scale-out.md) --------------------------------------------------------

#: What a requirements mapping is, once validated: a plain dict (or None: anywhere).
Requirements = dict[str, Any]


def parse_requirements(name: str, value: Any) -> Requirements | None:
    """None (place anywhere, normally beside the creator) or a mapping of str keys to
    picklable values; refused here so that a typo does not surface inside an admin."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ConfigError(name, f"expected a dict of capability name to value, or None, "
                                f"got {value!r}")
    for key in value:
        if not isinstance(key, str) or not key:
            raise ConfigError(name, f"capability names must be non-empty strings, got {key!r}")
    return picklable(name, dict(value))  # type: ignore[no-any-return]


def capabilities_satisfy(capabilities: Mapping[str, Any] | None,
                         requirements: Mapping[str, Any] | None) -> bool:
    """Thespian's placement rule here: every requirement is a capability of the admin with
    an equal value (an actor's `actorSystemCapabilityCheck`); no requirements: any admin."""
    capabilities = capabilities or {}
    missing = object()
    return all(capabilities.get(key, missing) == wanted
               for key, wanted in (requirements or {}).items())


# ---- supervision --------------------------------------------------------------------------

#: `ChildSpec.shutdown` value: kill the child at once, without asking it to stop.
BRUTAL_KILL: Final = "brutal_kill"

Shutdown = float | Literal["brutal_kill"] | None

ActorClass: TypeAlias = builtins.type  # `type` is a ChildSpec field, as in Elixir


class ChildType(enum.StrEnum):
    WORKER = "worker"
    SUPERVISOR = "supervisor"


_DEFAULT_SHUTDOWN: Any = object()


def _child_id(name: str, value: Any) -> Hashable:
    if value is None:
        raise ConfigError(name, "required")
    try:
        hash(value)
    except TypeError:
        raise ConfigError(name, f"must be hashable, got {value!r}") from None
    return picklable(name, value)  # type: ignore[no-any-return]


def _start(name: str, value: Any) -> ActorClass | tuple[ActorClass, Any]:
    actor_class = value[0] if isinstance(value, tuple) and len(value) == 2 else value
    if not (isinstance(actor_class, builtins.type)
            and callable(getattr(actor_class, "receiveMessage", None))):
        raise ConfigError(name, f"expected an actor class or (actor class, init message), "
                                f"got {value!r}")
    return picklable(name, value)  # type: ignore[no-any-return]


def _shutdown(name: str, value: Any) -> Shutdown:
    if value == BRUTAL_KILL:
        return BRUTAL_KILL
    return None if value == math.inf else timeout(name, value)


@dataclass(frozen=True, init=False)
class ChildSpec:
    """How a supervisor starts, stops and restarts one child (Elixir's child specification).

    `id`: any hashable, picklable value, unique within the supervisor.

    `start`: an actor class, or `(actor_class, init_message)`. With an init
    message the supervisor sends it to the new actor and the child counts as
    started when it answers: any reply counts as success, except an `Exception`
    instance (or a `PoisonMessage`, when the handler raised), which fails the
    start. The sender of the init message is the supervisor. Without an init
    message the child counts as started once created.

    `restart`: "permanent", "transient" or "temporary" (`Restart`).

    `shutdown`: seconds (or a timedelta) the child gets to stop before it is
    killed; `BRUTAL_KILL` ("brutal_kill") to kill it without asking; None to
    wait as long as it takes (Elixir's :infinity). Default: 5 s for a worker,
    None for a supervisor.

    `type`: "worker" or "supervisor" (`ChildType`); informative, as in Elixir.

    `stop_message`: how the supervisor asks the child to stop. None (default):
    Thespian's `ActorExitRequest`, so the actor's handler for it is its
    terminate. Otherwise this message is sent; the child must then exit by
    itself once stopped (a Pachka server drains, answers `Stopped` and exits).

    `requirements`: None, or capabilities the admin hosting the child must have
    (equal values, see docs/scale-out.md): the supervisor creates it with
    Thespian's `targetActorRequirements`, possibly on another convention member.
    """

    id: Hashable
    start: ActorClass | tuple[ActorClass, Any]
    restart: Restart
    shutdown: Shutdown
    type: ChildType
    stop_message: Any
    requirements: dict[str, Any] | None

    def __init__(self, id: Hashable, start: ActorClass | tuple[ActorClass, Any],
                 restart: Restart | str = Restart.PERMANENT,
                 shutdown: float | timedelta | str | None = _DEFAULT_SHUTDOWN,
                 type: ChildType | str = ChildType.WORKER,
                 stop_message: Any = None,
                 requirements: Mapping[str, Any] | None = None) -> None:
        child_type = one_of(ChildType)("type", type)
        if shutdown is _DEFAULT_SHUTDOWN:
            shutdown = 5.0 if child_type is ChildType.WORKER else None
        set_field = object.__setattr__
        set_field(self, "id", _child_id("id", id))
        set_field(self, "start", _start("start", start))
        set_field(self, "restart", one_of(Restart)("restart", restart))
        set_field(self, "shutdown", _shutdown("shutdown", shutdown))
        set_field(self, "type", child_type)
        set_field(self, "stop_message", picklable("stop_message", stop_message))
        set_field(self, "requirements", parse_requirements("requirements", requirements))

    @property
    def actor_class(self) -> ActorClass:
        return self.start[0] if isinstance(self.start, tuple) else self.start


def _children(name: str, value: Any) -> tuple[ChildSpec, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise ConfigError(name, f"expected a sequence of ChildSpec, got {value!r}")
    ids: set[Hashable] = set()
    for spec in value:
        if not isinstance(spec, ChildSpec):
            raise ConfigError(name, f"expected ChildSpec instances, got {spec!r}")
        if spec.id in ids:
            raise ConfigError("id", f"duplicate child id {spec.id!r}")
        ids.add(spec.id)
    return tuple(value)


def _max_seconds(name: str, value: Any) -> float:
    parsed = seconds(name, value)
    if parsed == 0:
        raise ConfigError(name, "must be > 0 seconds")
    return parsed


SUPERVISOR_OPTIONS: tuple[Option, ...] = (
    Option("children", "sequence of ChildSpec", "Started in order, stopped in reverse.",
           _children),
    Option("strategy", "'one_for_one', 'one_for_all' or 'rest_for_one'",
           "Which siblings are restarted with a child that exited.", one_of(Strategy)),
    Option("max_restarts", "int >= 0",
           "More restarts than this within `max_seconds` and the supervisor gives up.",
           integer(0)),
    Option("max_seconds", "seconds > 0", "The window `max_restarts` is counted in.",
           _max_seconds),
)


@dataclass(frozen=True)
class SupervisorConfig:
    """Validated options of one supervisor; travels to it in `StartSupervisor`."""

    children: tuple[ChildSpec, ...] = field(default=())
    strategy: Strategy = Strategy.ONE_FOR_ONE
    max_restarts: int = 3
    max_seconds: float = 5.0

    def __post_init__(self) -> None:
        validate_fields(self, SUPERVISOR_OPTIONS)

    @classmethod
    def parse(cls, options: Mapping[str, Any]) -> SupervisorConfig:
        """From keyword options; raises `ConfigError` naming the first bad or unknown one."""
        return build(cls, SUPERVISOR_OPTIONS, options)
