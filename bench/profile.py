"""`--profile DIR`: py-spy samples of the API and worker processes during the end-to-end runs, summarised.

py-spy is not a dependency: install it (`.venv/bin/pip install py-spy`) to use this. It samples at
100 Hz with `--nonblocking` (it never stops the process it reads) and `--gil` (only the thread
running Python), child processes included, and writes collapsed stacks (`--format raw`);
`summarise` turns them into the functions that cost the most.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

from bench.tables import table

#: `func (botocore/client.py:123)` -> `func (botocore/client.py)`: costs add up per function, not per line
#: (py-spy already names files from their package down).
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^():]*?)(?::\d+)?\)$")


#: Frames every thread has: they say nothing about where the time goes.
_PLUMBING = (
    "Thread._bootstrap",
    "Thread.run (",
    "_worker (futures/thread.py)",
    "_WorkItem.run",
    "<module>",
    "_run_code",
    "_run_module_as_main",
    "main (",
    "run (asyncio/runners.py)",
    "Runner.run",
    "BaseEventLoop.run",
    "BaseEventLoop._run_once",
    "Handle._run",
)


def py_spy() -> str:
    """The py-spy binary: beside this interpreter, else on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if not found:
        raise SystemExit("--profile needs py-spy: `.venv/bin/pip install py-spy`.")
    return found


def start(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """Sample `pid` and its child processes until `stop`."""
    # --gil: only the thread holding the GIL, i.e. running Python; the others wait on sockets or locks.
    command = [py_spy(), "record", "--nonblocking", "--gil", "--subprocesses", "--format", "raw", "--rate", "100"]
    command += ["--pid", str(pid), "--output", str(out)]
    log = out.with_suffix(".log").open("wb")
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def stop(process: subprocess.Popen[bytes]) -> None:
    """Ask py-spy to write what it has (SIGINT), then wait for it."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _package(function: str) -> str:
    """`func (botocore/client.py)` -> `botocore`; the standard library by module: `json`, `threading`."""
    file = function.rpartition(" (")[2].rstrip(")")
    head = file.split("/", 1)[0]
    return head.removesuffix(".py") if head else "?"


def _function(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    return f"{match['func']} ({match['file']})"


def summarise(path: Path, *, top: int = 15) -> str:
    """The functions with the most samples on top of the stack (self) and anywhere in it (total)."""
    own: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    anywhere: Counter[str] = Counter()
    total = 0
    with contextlib.suppress(FileNotFoundError):
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            n = int(count)
            # The first frames name the processes (master, then child); the rest are Python frames, outermost first.
            frames = [_function(f) for f in stack.split(";") if not f.startswith("process ")]
            if not frames:
                continue
            total += n
            own[frames[-1]] += n
            packages[_package(frames[-1])] += n
            for name in set(frames):
                anywhere[name] += n
    if not total:
        return f"{path.name}: no samples"
    rows = []
    self_top = own.most_common(top)
    total_top = [(name, n) for name, n in anywhere.most_common() if not name.startswith(_PLUMBING)][:top]
    for i in range(max(len(self_top), len(total_top))):
        a = self_top[i] if i < len(self_top) else ("", 0)
        b = total_top[i] if i < len(total_top) else ("", 0)
        rows.append(
            [
                a[0][:80],
                f"{100 * a[1] / total:.1f}" if a[1] else "",
                b[0][:80],
                f"{100 * b[1] / total:.1f}" if b[1] else "",
            ]
        )
    by_package = ", ".join(f"{name} {100 * n / total:.0f}%" for name, n in packages.most_common(10))
    title = f"{path.name}: {total} samples running Python; self time by package: {by_package}"
    return table(["self: function", "%", "total: function", "%"], rows, title)
