"""The one option schema: validation, defaults and the docs' options table all come from it.

Pachka validates its options with NimbleOptions before the server starts; this
module does the same, raising `ConfigError` naming the option.
"""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from .errors import ConfigError
from .sink import Sink

#: How the server schedules its timers: real Thespian wakeups, or none at all so that
#: a test fires each timer itself by sending `TimerFired` (Pachka's tests stub the timer too).
Timers = Literal["wakeup", "manual"]


@dataclass(frozen=True)
class PachkaConfig:
    """Validated options of one Pachka server; travels to the server actor in `StartServer`."""

    sink: Sink
    name: str | None = None
    server_value: Any = None
    max_batch_size: int = 500
    critical_queue_size: int = 10_000
    max_batch_delay: float | None = 5.0
    export_timeout: float | None = 10.0
    credit_timeout: float | None = 10.0
    timers: Timers = "wakeup"


@dataclass(frozen=True)
class Option:
    """One row of the schema: how to check a value and how to document it."""

    name: str
    type_doc: str
    doc: str
    parse: Callable[[str, Any], Any]


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(name, f"expected a positive integer, got {value!r}")
    if value <= 0:
        raise ConfigError(name, f"must be positive, got {value}")
    return value


def parse_timeout(name: str, value: Any) -> float | None:
    """Seconds (int, float or timedelta) >= 0, or None for infinity (Elixir's :infinity)."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(name, f"expected seconds (float or timedelta) or None, got {value!r}")
    if value != value or value < 0:  # NaN compares unequal to itself
        raise ConfigError(name, f"must be >= 0 seconds, got {value}")
    return float(value)


def _name(name: str, value: Any) -> str | None:
    if value is not None and (not isinstance(value, str) or not value):
        raise ConfigError(name, f"expected a non-empty string or None, got {value!r}")
    return value


def _picklable(name: str, value: Any) -> Any:
    check_picklable(name, value)
    return value


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
    check_picklable(name, value)
    return value


def check_picklable(name: str, value: Any) -> None:
    """Multi-process bases pickle every message; fail at start, not inside an actor."""
    try:
        pickle.dumps(value)
    except Exception as exc:
        raise ConfigError(
            name,
            f"must be picklable to cross processes (define it at module level, no lambdas "
            f"or locks): {exc}",
        ) from exc


SCHEMA: tuple[Option, ...] = (
    Option("sink", "Sink subclass or instance",
           "Receives the batches. A class is instantiated once by the library; the instance "
           "is pickled to every exporter actor, so it must be picklable.", _sink),
    Option("name", "str or None",
           "Thespian `globalName` of the server, for `Pachka.connect(system, name)`.", _name),
    Option("server_value", "any picklable value",
           "Passed to every sink callback, e.g. to tell servers sharing a sink apart.",
           _picklable),
    Option("max_batch_size", "int > 0",
           "A batch is exported as soon as this many messages are queued; no batch is larger.",
           _positive_int),
    Option("critical_queue_size", "int > 0",
           "Queued messages (not counting the batch being exported) at which new messages are "
           "refused with `Overloaded`.", _positive_int),
    Option("max_batch_delay", "seconds (float or timedelta) or None",
           "Time from the first message queued while no export runs until what is queued "
           "is exported (the batch timer); None: only full batches go out.", parse_timeout),
    Option("export_timeout", "seconds (float or timedelta) or None",
           "Longest time `send_batch` may run; past it the exporter is killed and the batch "
           "retried with reason `\"killed\"`. None: no limit.", parse_timeout),
    Option("credit_timeout", "seconds (float or timedelta) or None",
           "How long room reserved for a producer's buffer (see `linger`) stays reserved "
           "unused; a stopping server waits up to this long for promised messages.",
           parse_timeout),
    Option("timers", "'wakeup' or 'manual'",
           "'manual' schedules no wakeups: tests fire each timer by sending `TimerFired`.",
           _timers),
)

_BY_NAME: Mapping[str, Option] = {option.name: option for option in SCHEMA}


def parse_options(options: Mapping[str, Any]) -> PachkaConfig:
    """Check every option against `SCHEMA`; raises `ConfigError` naming the first bad one."""
    unknown = sorted(set(options) - set(_BY_NAME))
    if unknown:
        raise ConfigError(unknown[0], f"unknown option; known: {', '.join(_BY_NAME)}")
    options = {"sink": None, **options}  # a missing sink gets _sink's "required" error
    return PachkaConfig(**{name: _BY_NAME[name].parse(name, value)
                           for name, value in options.items()})


def options_table() -> str:
    """The Markdown options table of docs/options.md, generated so it cannot drift."""
    defaults = {f.name: f.default for f in dataclasses.fields(PachkaConfig)}
    rows = ["| option | type | default | meaning |", "|---|---|---|---|"]
    for o in SCHEMA:
        default = defaults[o.name]
        shown = "required" if default is dataclasses.MISSING else f"`{default!r}`"
        rows.append(f"| `{o.name}` | {o.type_doc} | {shown} | {o.doc} |")
    return "\n".join(rows) + "\n"
