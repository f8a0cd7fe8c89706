"""Exceptions raised to users of pachka_actors."""

from __future__ import annotations


class PachkaError(Exception):
    """Base of every error this library raises, so callers can catch them all at once."""


class ConfigError(PachkaError, ValueError):
    """A bad option or child spec; raised before any actor starts, naming the option."""

    def __init__(self, option: str, problem: str) -> None:
        super().__init__(f"{option}: {problem}")
        self.option = option
        self.problem = problem

    def __reduce__(self) -> tuple[type[ConfigError], tuple[str, str]]:
        # Crosses processes as a start-failure reply; the default reduce loses `problem`.
        return (type(self), (self.option, self.problem))


class Overloaded(PachkaError):
    """The server refused a message: its queue is at `critical_queue_size`, or it is terminating.

    Pachka's `{:error, :overloaded}`; `terminating` tells the two causes apart.
    """

    def __init__(self, message: str = "overloaded", *, terminating: bool = False) -> None:
        super().__init__(message)
        self.terminating = terminating

    def __reduce__(self) -> tuple[object, ...]:
        return (_overloaded, (str(self), self.terminating))


def _overloaded(message: str, terminating: bool) -> Overloaded:
    return Overloaded(message, terminating=terminating)


class ActorTimeout(PachkaError, TimeoutError):
    """An actor did not answer in time (Thespian's ask returned None)."""
