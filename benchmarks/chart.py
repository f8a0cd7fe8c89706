"""A dependency-free SVG bar chart of the contenders' messages/s (log scale), one group per goal.

`python -m benchmarks --svg PATH` draws it after a run; `python -m benchmarks.chart
RESULTS.json PATH` redraws it from a run saved with `--json`.
"""

from __future__ import annotations

import json
import math
import sys
from html import escape

from ._harness import Row

WIDTH, LEFT, RIGHT, BAR, GAP, HEAD = 1100, 300, 980, 18, 6, 26
OURS, THEIRS, MISSED, MET = "#2f6db5", "#a8a8a8", "#b03a2e", "#2e7d32"


def _x(rate: float, low: int, high: int) -> float:
    return LEFT + (math.log10(max(rate, 10.0**low)) - low) / (high - low) * (RIGHT - LEFT)


def _label(rate: float) -> str:
    for size, suffix in ((1e6, "M"), (1e3, "k")):
        if rate >= size:
            return f"{rate / size:.3g}{suffix}"
    return f"{rate:.3g}"


def render(rows: list[Row]) -> str:
    charted = [r for r in rows if r.rates]
    rates = [rate for r in charted for _, rate in r.rates] or [1.0]
    low, high = math.floor(math.log10(min(rates))), math.ceil(math.log10(max(rates)) + 0.3)
    height = 60 + sum(HEAD + len(r.rates) * (BAR + GAP) + 8 for r in charted) + 30
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="{WIDTH}" height="{height}" fill="white"/>',
           '<text x="10" y="22" font-size="15" font-weight="bold">pachka_actors vs what users '
           'would otherwise do: messages/s, log scale (higher is better)</text>']
    for decade in range(low, high + 1):
        x = _x(10.0**decade, low, high)
        out.append(f'<line x1="{x:.1f}" y1="40" x2="{x:.1f}" y2="{height - 25}" '
                   f'stroke="#e4e4e4"/>')
        out.append(f'<text x="{x:.1f}" y="{height - 10}" text-anchor="middle" fill="#555">'
                   f'{_label(10.0**decade)}</text>')
    y = 50
    for row in charted:
        held = [r for r in rows if r.goal == row.goal and r.met is not None]
        colour = MET if all(r.met for r in held) else MISSED
        verdicts = "; ".join(f"{r.ratio:.3g}x vs {r.goal_text}: {'met' if r.met else 'not met'}"
                             for r in held)
        out.append(f'<text x="10" y="{y + 16}" font-weight="bold">Goal {row.goal}: '
                   f'{escape(row.name)}</text>')
        out.append(f'<text x="{WIDTH - 10}" y="{y + 16}" text-anchor="end" fill="{colour}">'
                   f'{escape(verdicts)}</text>')
        y += HEAD
        for name, rate in row.rates:
            fill = OURS if name.startswith("pachka") else THEIRS
            end = _x(rate, low, high)
            out.append(f'<text x="{LEFT - 8}" y="{y + 13}" text-anchor="end">'
                       f'{escape(name)}</text>')
            out.append(f'<rect x="{LEFT}" y="{y}" width="{end - LEFT:.1f}" height="{BAR}" '
                       f'fill="{fill}"/>')
            out.append(f'<text x="{end + 5:.1f}" y="{y + 13}">{_label(rate)}/s</text>')
            y += BAR + GAP
        y += 8
    out.append("</svg>")
    return "\n".join(out) + "\n"


def write_svg(rows: list[Row], path: str) -> None:
    with open(path, "w") as f:
        f.write(render(rows))


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m benchmarks.chart RESULTS.json OUT.svg", file=sys.stderr)
        return 2
    with open(argv[0]) as f:
        saved = json.load(f)
    rows = [Row(**{**r, "rates": tuple(tuple(pair) for pair in r["rates"])})
            for r in saved["rows"]]
    write_svg(rows, argv[1])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
