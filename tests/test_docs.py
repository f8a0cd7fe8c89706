"""Code shown in the docs is a copy of code that runs, kept equal here.

The docs inline it (GitHub shows an mkdocs include as its literal line): each
copy sits between `<!-- copy of PATH [NAME] ... -->` and `<!-- end of copy -->`
and must equal the lines between `[start:NAME]` and `[end:NAME]` in PATH.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
COPY = re.compile(r"^<!-- copy of (\S+) \[([\w-]+)\].*?-->\n(.*?)^<!-- end of copy -->$",
                  re.MULTILINE | re.DOTALL)
MARKER = re.compile(r"\[start:([\w-]+)\] shown in (\S+)")


def section(path: Path, name: str) -> str:
    """The dedented lines between the `[start:name]` and `[end:name]` markers of `path`."""
    lines = path.read_text().splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if f"[start:{name}]" in line]
    ends = [i for i, line in enumerate(lines) if f"[end:{name}]" in line]
    assert len(starts) == len(ends) == 1 and starts[0] < ends[0], \
        f"{path.name}: want one [start:{name}] before one [end:{name}]"
    return textwrap.dedent("".join(lines[starts[0] + 1:ends[0]]))


def expected(source: str, name: str) -> str:
    """What a doc shows for a section: Python in a fence, Markdown as it is."""
    text = section(ROOT / source, name)
    return f"```python\n{text}```\n" if source.endswith(".py") else text


def copies() -> list[tuple[str, str, str, str]]:
    return [(doc.relative_to(ROOT).as_posix(), match[1], match[2], match[3])
            for doc in DOCS for match in COPY.finditer(doc.read_text())]


@pytest.mark.parametrize(("doc", "source", "name", "shown"), copies(),
                         ids=lambda value: value if "\n" not in value else "")
def test_each_copy_equals_its_section(doc: str, source: str, name: str, shown: str) -> None:
    assert shown == expected(source, name), \
        f"{doc} shows an old copy of {source} [{name}]: copy the section again"


def test_every_marked_section_is_shown_where_it_says() -> None:
    shown = {(doc, source, name) for doc, source, name, _ in copies()}
    sources = {source for _, source, _ in shown}
    assert sources >= {"README.md", "examples/sqlite_sink.py", "examples/postgres_sink.py",
                       "tests/test_testing.py"}
    for source in sources:
        for name, doc in MARKER.findall((ROOT / source).read_text()):
            assert (doc, source, name) in shown, f"{source} [{name}] is not shown in {doc}"


def test_no_doc_includes_a_snippet() -> None:
    """An mkdocs include shows on GitHub as its own line, not as the code."""
    for doc in DOCS:
        assert '--8<-- "' not in doc.read_text(), f"{doc.name} includes a snippet: inline it"

