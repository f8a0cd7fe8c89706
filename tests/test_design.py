"""The house rules of docs/design.md, checked: pure modules stay pure, docs name real modules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pachka_actors"

#: State machines and policies: no Thespian, no clock, no I/O, not even through the package.
PURE = ["core", "_core_events", "_timers", "_restart", "_supervisor_core", "_credits"]


def imports_of(module: str) -> tuple[set[str], set[str]]:
    """The package modules `module` imports, and the outside top-level packages it imports."""
    path = PACKAGE / (module.replace(".", "/") + ".py")
    if not path.exists():
        path = PACKAGE / module.replace(".", "/") / "__init__.py"
    tree = ast.parse(path.read_text())
    package = module.rsplit(".", 1)[0] if "." in module else ""
    own: set[str] = set()
    outside: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("pachka_actors."):
                    own.add(alias.name.removeprefix("pachka_actors."))
                else:
                    outside.add(alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                if (node.module or "").startswith("pachka_actors"):
                    own.add((node.module or "").removeprefix("pachka_actors").lstrip("."))
                else:
                    outside.add((node.module or "").split(".")[0])
                continue
            base = package.split(".") if package else []
            base = base[:len(base) - (node.level - 1)] if node.level > 1 else base
            target = ".".join([*base, *(node.module.split(".") if node.module else [])])
            if node.module:
                own.add(target)
            else:  # from . import x: x is a module of the package
                own.update(".".join([*base, alias.name]) for alias in node.names)
    return {m for m in own if m}, outside


def closure(module: str) -> dict[str, set[str]]:
    """Every package module reachable from `module`, with what each imports from outside."""
    seen: dict[str, set[str]] = {}
    pending = [module]
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        own, outside = imports_of(current)
        seen[current] = outside
        pending += own
    return seen


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_reach_no_thespian(module: str) -> None:
    reached = closure(module)
    offenders = sorted(m for m, outside in reached.items() if "thespian" in outside)
    assert not offenders, f"{module} reaches Thespian through {offenders} " \
                          f"(its closure: {sorted(reached)})"


def test_the_closure_walk_sees_thespian_where_it_is() -> None:
    """The check above could pass by seeing nothing: the shells must be caught."""
    assert "thespian" in closure("server")["server"]


# ---- the public surface --------------------------------------------------------------------


def package_modules() -> list[str]:
    """Every module of the package, dotted below `pachka_actors` ("sinks" for its __init__)."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        parts = parts[:-1] if parts[-1] == "__init__" else parts
        if parts:
            found.append(".".join(parts))
    return found


def test_every_top_level_name_is_importable() -> None:
    import pachka_actors

    assert len(pachka_actors.__all__) == len(set(pachka_actors.__all__)) <= 12
    missing = [name for name in pachka_actors.__all__ if not hasattr(pachka_actors, name)]
    assert not missing, f"in pachka_actors.__all__ but not importable: {missing}"
    exec(f"from pachka_actors import {', '.join(pachka_actors.__all__)}", {})


def test_every_exception_the_library_defines_is_in_errors() -> None:
    """`pachka_actors.errors` is the one home of exceptions: each is a `PachkaError`, so
    callers can catch them all, and no other module defines one a public call could raise."""
    import importlib

    from pachka_actors import errors

    defined = {name: value for name, value in vars(errors).items()
               if isinstance(value, type) and value.__module__ == errors.__name__}
    assert defined and all(issubclass(cls, errors.PachkaError) for cls in defined.values())
    if hasattr(errors, "__all__"):
        assert set(defined) <= set(errors.__all__)
    elsewhere = []
    for module in sorted(set(package_modules()) - {"errors"}):
        loaded = importlib.import_module(f"pachka_actors.{module}")
        elsewhere += [f"{module}.{name}" for name, value in vars(loaded).items()
                      if isinstance(value, type) and issubclass(value, BaseException)
                      and value.__module__ == loaded.__name__]
    assert not elsewhere, f"exceptions defined outside pachka_actors.errors: {elsewhere}"


# ---- docs/design.md maps every module ------------------------------------------------------

DESIGN = PACKAGE.parent / "docs" / "design.md"


def named_in_design() -> set[str]:
    """The files docs/design.md names: `xxx.py`, `sinks/xxx.py`, `pachka_actors/xxx.py`, and
    `tests/xxx.py` and the like (outside the package, relative to the repository)."""
    import re

    text = DESIGN.read_text()
    return {name.removeprefix("pachka_actors/")
            for name in re.findall(r"(?<![\w/.])((?:[\w]+/)*[\w]+\.py)\b", text)}


def test_every_module_design_md_names_exists() -> None:
    missing = sorted(name for name in named_in_design()
                     if not (PACKAGE / name).exists() and not (PACKAGE.parent / name).exists())
    assert not missing, f"docs/design.md names files that do not exist: {missing}"


def test_design_md_names_every_module() -> None:
    modules = {str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py")}
    unnamed = sorted(modules - named_in_design())
    assert not unnamed, f"modules docs/design.md does not name: {unnamed}"
