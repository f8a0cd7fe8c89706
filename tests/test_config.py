"""Option validation: bad input is refused with ConfigError naming the option, before any actor."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sinks import RecordingSink, Unpicklable
from thespian.actors import ActorSystem

from pachka_actors import ConfigError, Pachka, Sink
from pachka_actors.config import SERVER_OPTIONS, PachkaConfig, options_table


class NoSendBatch(Sink):
    pass


class ExplodingSystem:
    """Stands for an actor system that must not be touched."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"an actor was started: system.{name}")


@pytest.mark.parametrize(("option", "value"), [
    ("max_batch_size", 0),
    ("max_batch_size", -1),
    ("max_batch_size", 2.5),
    ("max_batch_size", True),
    ("critical_queue_size", 0),
    ("critical_queue_size", "10"),
    ("max_batch_delay", -0.1),
    ("max_batch_delay", "1s"),
    ("max_batch_delay", float("nan")),
    ("export_timeout", timedelta(seconds=-1)),
    ("batches_per_exporter", 0),
    ("batches_per_exporter", 2.5),
    ("batches_per_exporter", True),
    ("batches_per_exporter", "3"),
    ("name", ""),
    ("name", 42),
    ("timers", "fake"),
    ("server_value", lambda: None),
    ("colour", "blue"),
    ("sink", None),
    ("sink", "module.Sink"),
    ("sink", NoSendBatch),
    ("sink", Unpicklable),
])
def test_bad_option_is_named(option: str, value: Any, tmp_path: Path) -> None:
    options = {"sink": RecordingSink(tmp_path), option: value}
    with pytest.raises(ConfigError) as error:
        Pachka.start(system=ExplodingSystem(), **options)
    assert error.value.option == option
    assert option in str(error.value)


def test_a_misspelt_option_gets_a_suggestion_among_every_option_start_takes(
        tmp_path: Path) -> None:
    """The known options listed are all that `Pachka.start` takes: the handle's too
    (before, `linger` and the rest were missing from the list)."""
    with pytest.raises(ConfigError) as error:
        Pachka.start(system=ExplodingSystem(), sink=RecordingSink(tmp_path), lingr=0.1)
    assert error.value.option == "lingr"
    assert "did you mean linger?" in str(error.value)
    assert all(name in str(error.value) for name in ("max_batch_size", "buffer_size",
                                                      "ask_timeout"))


def test_missing_sink() -> None:
    with pytest.raises(ConfigError) as error:
        PachkaConfig.parse({"max_batch_size": 3})
    assert error.value.option == "sink"


def test_values_are_normalised(tmp_path: Path) -> None:
    config = PachkaConfig.parse({"sink": RecordingSink(tmp_path), "export_timeout": None,
                            "max_batch_delay": timedelta(milliseconds=250), "max_batch_size": 7})
    assert config.max_batch_delay == 0.25
    assert config.export_timeout is None
    assert config.max_batch_size == 7
    assert config.critical_queue_size == 10_000
    assert config.batches_per_exporter == 1  # Pachka's: an exporter per batch
    for value in (None, 3):
        assert PachkaConfig.parse({"sink": RecordingSink(tmp_path),
                                   "batches_per_exporter": value}).batches_per_exporter == value


def test_sink_class_is_instantiated_once() -> None:
    class Counting(Sink):
        made = 0

        def __init__(self) -> None:
            Counting.made += 1

        def send_batch(self, messages: list[Any], server_value: Any) -> None:
            pass

    with pytest.raises(ConfigError, match="picklable"):  # a local class cannot cross processes
        PachkaConfig.parse({"sink": Counting})
    assert Counting.made == 1


def test_options_table_lists_every_option() -> None:
    table = options_table()
    for option in SERVER_OPTIONS:
        assert f"| `{option.name}` |" in table
    assert "| `max_batch_size` | int > 0 | `500` |" in table
    assert "| `sink` | Sink subclass or instance | required |" in table


def test_docs_options_table_is_current() -> None:
    docs = (Path(__file__).parent.parent / "docs" / "options.md").read_text()
    assert options_table() in docs, "regenerate: python -m pachka_actors options > docs/options.md"


def test_child_spec_validates_like_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        Pachka.child_spec(id="p", sink=RecordingSink(tmp_path), max_batch_size=0)
    assert error.value.option == "max_batch_size"
    with pytest.raises(ConfigError) as error:
        Pachka.child_spec(id="p", sink=RecordingSink(tmp_path), name="events")
    assert error.value.option == "name"
    spec = Pachka.child_spec(id="p", sink=RecordingSink(tmp_path), shutdown=30)
    assert (spec.id, spec.shutdown) == ("p", 30.0)


@pytest.mark.parametrize(("option", "value"), [
    ("linger", -1),
    ("linger", "fast"),
    ("linger", float("inf")),
    ("buffer_size", "10"),
    ("buffer_size", 0),
    ("ask_timeout", "x"),
    ("ask_timeout", -1),
])
def test_bad_handle_option_is_named(option: str, value: Any, tmp_path: Path) -> None:
    """Handle options are checked like the server's, before the server actor exists."""
    with pytest.raises(ConfigError) as error:
        Pachka.start(system=ExplodingSystem(), sink=RecordingSink(tmp_path), **{option: value})
    assert error.value.option == option
    assert option in str(error.value)
    with pytest.raises(ConfigError) as error:
        Pachka.connect(ExplodingSystem(), "events", **{option: value})
    assert error.value.option == option


@pytest.mark.parametrize(("options", "named"), [
    ({"max_batch_size": 100, "critical_queue_size": 10}, "critical_queue_size"),
    ({"max_batch_bytes": 1000, "critical_queue_bytes": 500}, "critical_queue_bytes"),
])
def test_a_queue_smaller_than_a_batch_without_batch_delay_is_refused(
        options: dict[str, Any], named: str, tmp_path: Path) -> None:
    """No batch could fill, and with `max_batch_delay=None` nothing would go out before
    `stop()` (a new user's server took 10 messages and exported none)."""
    with pytest.raises(ConfigError) as error:
        Pachka.start(system=ExplodingSystem(), sink=RecordingSink(tmp_path),
                     max_batch_delay=None, **options)
    assert error.value.option == named and "max_batch_delay=None" in str(error.value)
    PachkaConfig.parse({"sink": RecordingSink(tmp_path), **options})  # with a delay: fine


def test_stop_and_flush_check_their_timeout(simple_system: ActorSystem, tmp_path: Path) -> None:
    """As `send_message(wait=...)` does: `stop(timeout=-1)` returned normally before."""
    server = Pachka.start(system=simple_system, sink=RecordingSink(tmp_path))
    for call in (server.flush, server.stop):
        with pytest.raises(ConfigError) as error:
            call(-1)
        assert error.value.option == "timeout"
    with pytest.raises(ConfigError, match="got a str"):
        server.send_messages("abc")  # one message per character, before
    server.stop(timeout=30)
    assert server.stats().accepted == 0
