"""Where goal 1's time goes: cProfile on the producer, py-spy on the server and its exporters.

`python -m benchmarks.profile_sqlite [--messages N] [--out DIR]` runs the
pachka_actors side of goal 1 twice. First unprofiled, with CPU accounting from
/proc: the producer's, the server's and its reaped exporters', against wall
time. Then the
producer (this process) under cProfile while py-spy samples the server actor's
process, idle time included so that samples add up to wall time (if py-spy is
installed: `pip install py-spy`). The server is the one process that
`Pachka.start` added to the system's session (not counting its own children).
Prints the top costs of each.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import io
import itertools
import os
import pstats
import shutil
import signal
import statistics
import subprocess
import time
from dataclasses import dataclass
from typing import Any

from thespian.actors import ActorSystem

from pachka_actors import Pachka
from pachka_actors.systems import session_pids, shutdown_system, start_system

from ._harness import FULL
from ._sinks import make_messages, verify
from .sqlite_insert import PREFIX, SQLiteSink, check_db, new_db

BATCH = FULL.sqlite_batch


def producer_profile(profile: cProfile.Profile, top: int) -> str:
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumtime").print_stats(top)
    return out.getvalue()


@dataclass(frozen=True)
class Cpu:
    """CPU seconds: user and system of a process, and of its reaped children."""

    user: float
    system: float
    children: float

    def __sub__(self, other: Cpu) -> Cpu:
        return Cpu(self.user - other.user, self.system - other.system,
                   self.children - other.children)


def new_server(sid: int, before: set[int]) -> int:
    """The process `Pachka.start` added to session `sid`: the new one whose parent is not new
    (a server may start a spare exporter of its own right away)."""
    new = set(session_pids(sid)) - before
    tops = [pid for pid in new if _parent(pid) not in new]
    if len(tops) != 1:
        raise RuntimeError(f"cannot tell the server among new processes {sorted(new)}")
    return tops[0]


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def cpu_of(pid: int) -> Cpu:
    """From /proc/<pid>/stat (clock ticks)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    utime, stime, cutime, cstime = (int(v) / tick for v in fields[11:15])
    return Cpu(utime, stime, cutime + cstime)


def own_cpu() -> Cpu:
    times = os.times()
    return Cpu(times.user, times.system, times.children_user + times.children_system)


def frame_name(frame: str) -> str:
    """py-spy's "function (file.py:line)" without the line number, and the path shortened."""
    function, _, where = frame.partition(" (")
    return f"{function} ({os.path.basename(where.rsplit(':', 1)[0])})"


def summarize_spy(raw_path: str, top: int) -> str:
    """Idle vs busy samples of the server, and its busiest frames below Thespian's run loop."""
    self_time: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = idle = 0
    with open(raw_path) as f:
        for line in f:
            stack, _, count_text = line.rstrip("\n").rpartition(" ")
            count = int(count_text)
            names = [frame_name(frame) for frame in stack.split(";")]
            if "ActorManager.run (actorManager.py)" in names:  # drop the fork-time ancestors
                names = names[len(names) - names[::-1].index("ActorManager.run (actorManager.py)"):]
            total += count
            if not names or names[-1].startswith("EpollSelector.select"):
                idle += count
                continue
            self_time[names[-1]] += count
            for name in set(names):
                inclusive[name] += count
    busy = total - idle
    lines = [f"== server: {total} samples, {idle / max(total, 1):.1%} idle in select; "
             f"shares below are of the {busy} busy samples",
             "  self:"]
    lines += [f"    {n / max(busy, 1):6.1%}  {name}" for name, n in self_time.most_common(top)]
    lines.append("  inclusive:")
    lines += [f"    {n / max(busy, 1):6.1%}  {name}" for name, n in inclusive.most_common(top)]
    return "\n".join(lines)


class TimelineSink(SQLiteSink):
    """SQLiteSink that also logs when each export ran and the exporter process's CPU."""

    def __init__(self, db_path: str, log_path: str, timeline_path: str) -> None:
        super().__init__(db_path, log_path)
        self.timeline_path = timeline_path

    def send_batch(self, messages: list[Any], server_value: Any) -> None:
        start = time.monotonic()
        super().send_batch(messages, server_value)
        end, cpu = time.monotonic(), time.process_time()
        with open(self.timeline_path, "a") as f:
            f.write(f"{start} {end} {cpu}\n")


def timeline(path: str, began: float, ended: float) -> str:
    """Per batch: how long the sink ran, and the gap before the next export began."""
    with open(path) as f:
        spans = [tuple(float(v) for v in line.split()) for line in f if line.strip()]
    sink = [end - start for start, end, _ in spans]
    gaps = [nxt[0] - cur[1] for cur, nxt in itertools.pairwise(spans)] or [0.0]
    cpu = [c for _, _, c in spans]
    ms = 1e3
    return (f"  {len(spans)} exports: first began {(spans[0][0] - began) * ms:.0f} ms after "
            f"the start, the last ended {(ended - spans[-1][1]) * ms:.0f} ms before stop() "
            f"returned;\n  per batch: send_batch {statistics.median(sink) * ms:.1f} ms "
            f"(median), gap to the next export {statistics.median(gaps) * ms:.1f} ms (median; "
            f"sum of gaps {sum(gaps) * ms:.0f} ms), exporter process CPU "
            f"{statistics.median(cpu) * ms:.1f} ms (fork to end of send_batch)")


def accounting_run(asys: ActorSystem, sid: int, out: str, titles: list[str]) -> str:
    """One unprofiled run: wall split, producer and server CPU, and the export timeline."""
    db, log = new_db(out, f"plain-{os.getpid()}"), os.path.join(out, "plain.log")
    spans = os.path.join(out, "timeline.txt")
    before = set(session_pids(sid))
    began = time.monotonic()
    wall = time.perf_counter()
    handle = Pachka.start(system=asys, sink=TimelineSink(db, log, spans), max_batch_size=BATCH)
    started = time.perf_counter() - wall
    server = new_server(sid, before)
    own0, server0 = own_cpu(), cpu_of(server)
    loop = time.perf_counter()
    for title in titles:
        handle.send_message(title)
    loop = time.perf_counter() - loop
    producer, served = own_cpu() - own0, cpu_of(server) - server0
    stop = time.perf_counter()
    handle.stop()
    stop = time.perf_counter() - stop
    wall = time.perf_counter() - wall
    ended = time.monotonic()
    n = len(titles)
    check_db(db, n)
    verify(log, n, BATCH)

    def us(seconds: float) -> str:
        return f"{seconds / n * 1e6:.0f} us"

    return "\n".join([
        f"unprofiled: {n:,} messages in {wall:.3f} s = start {started * 1e3:.0f} ms + "
        f"send_message loop {loop * 1e3:.0f} ms + stop {stop * 1e3:.0f} ms",
        f"  per message in the loop: wall {us(loop)}; CPU (the two overlap on 2 cores): "
        f"producer {us(producer.user)} user + {us(producer.system)} system, "
        f"server {us(served.user)} user + {us(served.system)} system",
        timeline(spans, began, ended),
    ])


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_sqlite")
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--out", default="/tmp/pachka-profile")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    db, log = new_db(args.out, f"profile-{os.getpid()}"), os.path.join(args.out, "batches.log")
    raw = os.path.join(args.out, "server.pyspy.txt")
    for stale in (log, raw, *(os.path.join(args.out, f) for f in ("plain.log", "timeline.txt"))):
        if os.path.exists(stale):
            os.remove(stale)
    spy = shutil.which("py-spy")
    titles = make_messages(0, args.messages, PREFIX)
    asys, sid = start_system("multiprocTCPBase")
    assert sid is not None
    try:
        accounting = accounting_run(asys, sid, args.out, titles)
        before = set(session_pids(sid))
        handle = Pachka.start(system=asys, sink=SQLiteSink(db, log), max_batch_size=BATCH)
        server = new_server(sid, before)
        sampler = None
        if spy:
            sampler = subprocess.Popen(
                [spy, "record", "--pid", str(server), "--idle", "--rate", "500",
                 "--format", "raw", "--output", raw, "--nonblocking"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)  # let py-spy attach before the first message
        profile = cProfile.Profile()
        start = time.perf_counter()
        profile.enable()
        for title in titles:
            handle.send_message(title)
        handle.stop()
        profile.disable()
        elapsed = time.perf_counter() - start
        if sampler is not None:
            try:
                sampler.wait(timeout=5)  # py-spy ends when the server process exits...
            except subprocess.TimeoutExpired:  # ...which it should, right after stop()
                print(f"the server (pid {server}) is still running 5 s after stop()")
                sampler.send_signal(signal.SIGINT)  # py-spy writes what it has and exits
                sampler.wait(timeout=30)
    finally:
        shutdown_system(asys, sid)
    check_db(db, args.messages)
    verify(log, args.messages, BATCH)
    print(accounting + "\n")
    print(f"profiled: {args.messages:,} send_message + stop: {elapsed:.2f} s "
          f"({elapsed / args.messages * 1e6:.0f} us/msg; cProfile slows the producer)\n")
    print(producer_profile(profile, args.top))
    if spy and os.path.exists(raw):
        print(summarize_spy(raw, args.top))
    else:
        print("py-spy not installed: no server profile")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
