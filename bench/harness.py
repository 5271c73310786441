"""Helpers the benchmark scripts share: server processes, CPU accounting, number formatting
and the report section they write.

The scripts run as ``python bench/NAME.py``, so ``bench/`` is on ``sys.path`` and they import
this module as ``harness``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
"""The repository root."""


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- server processes ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the benchmark dies (Linux only)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def stop_process(process: subprocess.Popen[bytes], label: str, timeout: float) -> None:
    """SIGTERM, then SIGKILL if ``process`` has not exited within ``timeout`` seconds."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            log(f"{label} ignored SIGTERM for {timeout:g} s; killing it")
            process.kill()
            process.wait(timeout)


def log_tail(path: Path, chars: int) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


async def serve_until_stopped(lifetime: float) -> None:
    """In a server process: return on SIGINT or SIGTERM, or after ``lifetime`` seconds."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), lifetime)


def exit_on_signal(signum: int, frame: object) -> None:
    """A SIGTERM/SIGHUP handler: unwinds through the blocks that stop the servers."""
    raise SystemExit(128 + signum)


def exit_on_signals() -> None:
    """Make SIGTERM and SIGHUP exit through ``exit_on_signal``."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, exit_on_signal)


def cancel_on_signals() -> None:
    """Within a task: have SIGTERM and SIGHUP cancel it (cleanly, through its ``finally``s)."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, task.cancel)


# -- CPU -------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux ``/proc``); 0 where unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_seconds() -> tuple[float, float]:
    """CPU time the whole machine spent busy so far, and the time the hypervisor stole from it
    (every CPU, ``/proc/stat``); zeros where unknown."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0, 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    steal = fields[7] if len(fields) > 7 else 0
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(fields[:8]) - idle - steal) / tick, steal / tick


def busy_seconds() -> float:
    """CPU time the whole machine spent busy so far (every CPU, ``/proc/stat``); 0 where
    unknown."""
    return machine_seconds()[0]


async def wait_quiet(limit: float, noisy: float) -> None:
    """Wait (at most ``limit`` seconds) until the machine is idle: under ``noisy`` of a core
    busy over half a second. Between runs nothing of ours is busy."""
    clock = time.perf_counter
    deadline = clock() + limit
    while clock() < deadline:
        before, t0 = busy_seconds(), clock()
        await asyncio.sleep(0.5)
        if (busy_seconds() - before) / (clock() - t0) < noisy:
            return


def core_count() -> int | None:
    """The CPUs this process may run on (all of them where affinity is unknown)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# -- figures and the report ------------------------------------------------------------------


def percentiles(samples: Sequence[float]) -> tuple[float, float]:
    """(p50, p99) of ``samples`` in seconds, as milliseconds; NaN for none."""
    if len(samples) < 2:
        value = samples[0] * 1e3 if samples else float("nan")
        return value, value
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return cuts[49] * 1e3, cuts[98] * 1e3


def millis(value: float | None) -> str:
    if value is None or value != value:  # None or NaN
        return "—"
    if abs(value) < 10:
        return f"{value:.2f}"
    return f"{value:.1f}" if abs(value) < 100 else f"{value:.0f}"


def percent(value: float) -> str:
    return "—" if value != value else f"{value * 100:.0f} %"


def micros(value: float) -> str:
    if value != value:  # NaN
        return "—"
    return f"{value:.0f} µs" if value < 10_000 else f"{value / 1e3:.1f} ms"


def verdict(ok: bool) -> str:
    return "**PASS**" if ok else "**FAIL**"


def code_version() -> str:
    """The commit measured, and whether the working tree had changes."""
    try:
        done = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    described = done.stdout.strip()
    if described.endswith("-dirty"):
        return f"commit `{described.removesuffix('-dirty')}` plus uncommitted changes"
    return f"commit `{described}`"


def write_section(path: Path, report: str, begin_marker: str, end_marker: str) -> None:
    """Replace only the section between the markers (re-read right before writing, so that a
    section another benchmark wrote meanwhile is kept); append it where they are missing."""
    block = f"{begin_marker}\n{report}\n{end_marker}"
    text = path.read_text() if path.exists() else ""
    begin, end = text.find(begin_marker), text.find(end_marker)
    if begin >= 0 and end > begin:
        text = text[:begin] + block + text[end + len(end_marker) :]
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + block + "\n"
    path.write_text(text)


@dataclass(frozen=True)
class Windows:
    """How long each measured load run lasts: ``warmup_s`` unmeasured, then ``duration_s``
    measured, ``repeats`` times (the median is reported)."""

    warmup_s: float = 0.5
    duration_s: float = 2.0
    repeats: int = 3

    def quick(self) -> Windows:
        return replace(self, warmup_s=0.2, duration_s=0.5, repeats=1)
