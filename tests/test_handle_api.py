"""The handle's API (issue 18): context managers, the system passed either way, every option
shown by help() from the schema, options validated once, and only public errors."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import pydoc
from pathlib import Path
from typing import Any

import pytest
from sinks import RecordingSink, delivered
from support import start
from thespian.actors import ActorSystem

import pachka_actors._options
import pachka_actors.config
from pachka_actors import BufferedProducer, Pachka, errors
from pachka_actors.config import HANDLE_OPTIONS, SERVER_OPTIONS, HandleOptions, PachkaConfig
from pachka_actors.errors import NotStarted


def test_with_start_stops_on_leaving(simple_system: ActorSystem, tmp_path: Path) -> None:
    with Pachka.start(simple_system, sink=RecordingSink(tmp_path)) as server:  # positional
        server.send_message(1)
    assert delivered(tmp_path) == [1]
    with pytest.raises(NotStarted):
        server.status()


def test_with_start_stops_on_an_exception_and_raises_it(simple_system: ActorSystem,
                                                         tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="mine"), \
            Pachka.start(system=simple_system, sink=RecordingSink(tmp_path)) as server:
        server.send_message(1)
        raise KeyError("mine")
    assert delivered(tmp_path) == [1]
    with pytest.raises(NotStarted):
        server.status()


def test_with_connect_closes_and_the_server_runs_on(tcp_system: ActorSystem,
                                                    tmp_path: Path) -> None:
    server = start(tcp_system, tmp_path, linger=3600)
    with Pachka.connect(tcp_system, server.address) as other:
        other.send_message("a")  # lingers: closing ships it
    assert other._courier.thread is None or not other._courier.thread.is_alive()
    assert server.status().queue_length == 1
    server.stop()
    assert delivered(tmp_path) == ["a"]


@pytest.mark.parametrize(("function", "configs"), [
    (Pachka.start, [PachkaConfig, HandleOptions]),
    (Pachka.connect, [HandleOptions]),
    (Pachka, [HandleOptions]),
    (BufferedProducer, [HandleOptions]),
])
def test_help_shows_every_option_with_its_default(function: Any, configs: list[type]) -> None:
    parameters = inspect.signature(function).parameters
    text = pydoc.render_doc(function)
    schemas = {PachkaConfig: SERVER_OPTIONS, HandleOptions: HANDLE_OPTIONS}
    for config in configs:
        defaults = {f.name: f.default for f in dataclasses.fields(config)}
        for option in schemas[config]:
            assert option.name in parameters, option.name
            shown = parameters[option.name].default
            default = defaults[option.name]
            assert shown == default or (shown is inspect.Parameter.empty
                                        and default is dataclasses.MISSING), option.name
            assert option.doc[:30] in " ".join(text.split()), option.name
    assert "ask_timeout=60.0" in text and "buffer_size=1000" in text


def test_options_are_validated_once_per_start(simple_system: ActorSystem, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    validated: list[str] = []
    original = pachka_actors._options.validate_fields

    def counting(instance: object, schema: Any) -> None:
        validated.append(type(instance).__name__)
        original(instance, schema)

    monkeypatch.setattr(pachka_actors.config, "validate_fields", counting)
    server = Pachka.start(simple_system, sink=RecordingSink(tmp_path), name="once")
    assert sorted(validated) == ["HandleOptions", "PachkaConfig"]
    server.stop()


def test_status_says_what_it_returns() -> None:
    assert Pachka.status.__doc__ and "snapshot" in Pachka.status.__doc__


HANDLE_MODULES = ["pachka", "_courier", "producer", "_ask", "_credits"]


@pytest.mark.parametrize("module", HANDLE_MODULES)
def test_only_public_errors_are_raised(module: str) -> None:
    """Every exception class the handle's modules raise is one of `pachka_actors.errors` (a
    re-raise, or a refusal the server sent, is passed through as it is)."""
    path = Path(pachka_actors.config.__file__).parent / f"{module}.py"
    public = {name for name, value in vars(errors).items()
              if isinstance(value, type) and issubclass(value, Exception)}
    made = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
            func = node.exc.func
            if isinstance(func, ast.Name) and func.id[:1].isupper():
                made.add(func.id)
    assert made <= public, f"{module} raises {sorted(made - public)}"


def test_a_gone_server_raises_public_errors(tcp_system: ActorSystem, tmp_path: Path) -> None:
    server = start(tcp_system, tmp_path)
    other = Pachka.connect(tcp_system, server.address, linger=None)
    server.stop()
    with pytest.raises(NotStarted):  # was: pachka_actors._ask.Unreachable, a private class
        other.status()
    with pytest.raises(NotStarted):
        other.stats()
    other.flush()  # nothing to ship: nothing to say
    other.stop()  # stopped elsewhere: nothing lost


def test_stats_after_stop_are_the_final_counters(any_system: ActorSystem,
                                                 tmp_path: Path) -> None:
    """What a program reports at its end ("12 delivered, 0 lost") needs the counters as the
    server exited; after this handle's `stop()` `stats()` returns them, without a server
    to ask. `status()`, which describes a running server, still raises `NotStarted`."""
    server = Pachka.start(system=any_system, sink=RecordingSink(tmp_path), max_batch_size=5)
    server.send_messages(list(range(12)))
    server.stop()
    final = server.stats()
    assert (final.accepted, final.exported, final.batches_exported) == (12, 12, 3)
    assert (final.queue_length, final.batch_length) == (0, 0)
    with pytest.raises(NotStarted):
        server.status()
