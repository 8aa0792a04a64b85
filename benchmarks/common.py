"""What every benchmark records beside its figures, and how it writes them.

A result is only comparable with another when both say which machine, versions and commit
produced them, so the scripts gather that here, the same way. Result files are written
atomically: a run killed mid-write (benchmarks run for hours) leaves the previous file intact.

The scripts import this as `common`: run as `python benchmarks/<script>.py`, a script's own
folder is first on sys.path.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from warmstart._io import atomic_open

REPO_ROOT = Path(__file__).resolve().parent.parent


def cpu_count() -> int | None:
    """Cores the machine has (not the ones this process may use: see `usable_cores`)."""
    return os.cpu_count()


def usable_cores() -> int:
    """Cores this process may run on (a container or taskset may allow fewer than exist)."""
    return len(os.sched_getaffinity(0))


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ("unknown" where there is none)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


def memory_gb() -> float | None:
    """Total memory in GiB, to one decimal, from /proc/meminfo (None where unreadable)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        first = Path("/proc/meminfo").read_text().splitlines()[0]
        return round(int(first.split()[1]) / 1024**2, 1)
    return None


def python_version() -> str:
    return platform.python_version()


def package_versions(names: Iterable[str]) -> dict[str, str]:
    """`__version__` of each package that imports; the others are left out."""
    versions: dict[str, str] = {}
    for name in names:
        with contextlib.suppress(Exception):
            versions[name] = __import__(name).__version__
    return versions


def importable(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


def machine_info(packages: Iterable[str] = ("numpy",)) -> dict[str, Any]:
    """nproc, CPU model and memory of this machine, and the versions of `packages`."""
    return {
        "nproc": cpu_count(),
        "cpu_model": cpu_model(),
        "memory_gb": memory_gb(),
        "platform": platform.platform(),
        "python": python_version(),
        "versions": package_versions(packages),
    }


def python_and_cpus() -> dict[str, Any]:
    """The two machine fields the smaller result files keep."""
    return {"python": python_version(), "cpus": cpu_count()}


def machine_line(cores: int | None = None, *, python: bool = True) -> str:
    """The one-line machine field of the core and encoder results, e.g. "x86_64, 2 cores,
    3.11.7"; `cores` defaults to the machine's count."""
    parts = [platform.machine(), f"{cpu_count() if cores is None else cores} cores"]
    if python:
        parts.append(python_version())
    return ", ".join(parts)


def code_version(root: Path = REPO_ROOT) -> dict[str, Any]:
    """The commit the code under test (in `root`) comes from, and files changed since."""

    def git(*cmd: str) -> str:
        try:
            return subprocess.run(
                ["git", *cmd], cwd=root, capture_output=True, text=True, timeout=10
            ).stdout.rstrip("\n")  # not strip(): porcelain lines start with a status column
        except (OSError, subprocess.SubprocessError):
            return ""

    dirty = [line[3:] for line in git("status", "--porcelain", "--", "src").splitlines()]
    return {"commit": git("rev-parse", "HEAD"), "src_changed_since": dirty}


def command_line() -> str:
    """This process's command, quoted so that it can be pasted back into a shell."""
    return " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])


def log(msg: str) -> None:
    """A timestamped progress line on stderr, so that stdout keeps only the results."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def write_result(path: str | Path, obj: Any) -> None:
    """`obj` as indented JSON at `path`, atomically, keys in the order the script built them.

    Not `warmstart._io.write_json`, which sorts keys: the committed result files keep the
    scripts' order, and a rerun should differ from them in values only."""
    with atomic_open(path, "w") as fh:
        json.dump(obj, fh, indent=2)
        fh.write("\n")
