"""Option schemas: one table per configuration type drives validation, defaults and docs.

Pachka validates its options with NimbleOptions before the server starts; here a
frozen dataclass checks every field in `__post_init__` against its schema, so a
config cannot exist unvalidated, and `ConfigError` names the option.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import math
import pickle
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from .errors import ConfigError

#: The longest duration an option takes: Thespian's timers overflow far beyond it, and
#: anything longer is a unit mistake. `None` is the way to say "no limit".
MAX_SECONDS = 365 * 24 * 3600.0


@dataclass(frozen=True)
class Option:
    """One row of a schema: how to check a value and how to document it."""

    name: str
    type_doc: str
    doc: str
    parse: Callable[[str, Any], Any]


Schema = Sequence[Option]
C = TypeVar("C")


def validate_fields(instance: object, schema: Schema) -> None:
    """For `__post_init__` of a frozen dataclass: parse every field, store the parsed value."""
    for option in schema:
        value = option.parse(option.name, getattr(instance, option.name))
        object.__setattr__(instance, option.name, value)


def build(cls: Callable[..., C], schema: Schema, options: Mapping[str, Any],
          also: Schema = ()) -> C:
    """`cls(**options)`, with an unknown option named as a `ConfigError`, not a TypeError;
    `also`: the options the caller took out first, which the same call accepts too."""
    unknown = sorted(set(options) - {option.name for option in schema})
    if unknown:
        known = [option.name for option in (*schema, *also)]
        close = difflib.get_close_matches(unknown[0], known, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise ConfigError(unknown[0], f"unknown option; {hint}known: {', '.join(known)}")
    return cls(**options)


def table(cls: type, schema: Schema) -> str:
    """The Markdown table of `schema` with `cls`'s defaults, generated so docs cannot drift."""
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    rows = ["| option | type | default | meaning |", "|---|---|---|---|"]
    for option in schema:
        default = defaults.get(option.name, dataclasses.MISSING)
        shown = "required" if default is dataclasses.MISSING else f"`{default!r}`"
        rows.append(f"| `{option.name}` | {option.type_doc} | {shown} | {option.doc} |")
    return "\n".join(rows) + "\n"


# ---- parsers: (option name, value) -> parsed value, or ConfigError ------------------------


def integer(minimum: int) -> Callable[[str, Any], int]:
    def parse(name: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(name, f"expected an integer >= {minimum}, got {value!r}")
        if value < minimum:
            raise ConfigError(name, f"must be >= {minimum}, got {value}")
        return value

    return parse


positive_int = integer(1)


def seconds(name: str, value: Any) -> float:
    """Seconds (int, float or timedelta), 0 to `MAX_SECONDS`."""
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(name, f"expected seconds (float or timedelta), got {value!r}")
    if math.isnan(value) or value < 0:
        raise ConfigError(name, f"must be >= 0 seconds, got {value}")
    if value > MAX_SECONDS:
        raise ConfigError(name, f"must be at most {MAX_SECONDS:.0f} s (a year), got {value}; "
                                f"None means no limit")
    return float(value)


def timeout(name: str, value: Any) -> float | None:
    """`seconds`, or None for infinity (Elixir's :infinity)."""
    return None if value is None else seconds(name, value)


def picklable(name: str, value: Any) -> Any:
    """Multi-process bases pickle every message; fail at the call, not inside an actor."""
    try:
        pickle.dumps(value)
    except Exception as exc:
        raise ConfigError(
            name,
            f"must be picklable to cross processes (define it at module level, no lambdas "
            f"or locks): {exc}",
        ) from exc
    return value


E = TypeVar("E", bound=enum.Enum)


def one_of(kind: type[E]) -> Callable[[str, Any], E]:
    def parse(name: str, value: Any) -> E:
        try:
            return kind(value)
        except ValueError:
            choices = ", ".join(repr(member.value) for member in kind)
            raise ConfigError(name, f"expected one of {choices}, got {value!r}") from None

    return parse
