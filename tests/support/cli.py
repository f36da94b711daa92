"""The CLI two ways: `run_main` calls `reconciler.cli.main(argv)` in this process (fast, for everything that
is pure input and output); `run_cli` starts `python -m reconciler` (for what needs a process of its own:
signals, kills, concurrency, failpoints, the installed command). Both return returncode, stdout, stderr."""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import re
import signal
import struct
import subprocess
import sys
import termios
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.repos import GIT_ENV


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 120,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python -m reconciler ARGS` as a real subprocess (stdout is a pipe, not a terminal)."""
    full_env = {**os.environ, **GIT_ENV, **(env or {})}
    return subprocess.run([sys.executable, "-m", "reconciler", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout, input=input, check=False)


@dataclass(frozen=True)
class MainResult:
    """What `run_cli` gives, from an in-process run."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str


# Failpoints are read once, when reconciler.faults is imported: they only work in a process of their own.
_PROCESS_ONLY = ("RECONCILER_FAILPOINTS", "RECONCILER_FAILPOINT_LOG", "RECONCILER_FAILPOINT_EXEC")


def run_main(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> MainResult:
    """`reconciler ARGS` through `main(argv)` in this process, as `run_cli` would run it: the same
    environment (os.environ plus GIT_ENV plus `env`), streams that are not terminals and encode UTF-8
    strictly (so main's own escaping of odd file names is what is tested), and the signal handlers,
    working folder and environment of the test restored afterwards."""
    from reconciler.cli import main

    refused = sorted(set(env or {}) & set(_PROCESS_ONLY))
    assert not refused, f"{refused} need a process of their own: use run_cli"
    out, err = _stream(), _stream()
    with _environment({**GIT_ENV, **(env or {})}), _working_folder(cwd), _signal_handlers_kept(), \
            contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse's --help and --version
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return MainResult(list(args), code, _text(out), _text(err))


def _stream() -> io.TextIOWrapper:
    return io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict", write_through=True)


def _text(stream: io.TextIOWrapper) -> str:
    """Decoded as subprocess.run(text=True) decodes a pipe (universal newlines)."""
    stream.flush()
    raw = stream.buffer.getvalue()  # type: ignore[attr-defined]
    return io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8").read()


@contextlib.contextmanager
def _environment(changes: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in changes}
    os.environ.update(changes)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def _working_folder(cwd: Path | None) -> Iterator[None]:
    before = os.getcwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        yield
    finally:
        os.chdir(before)


@contextlib.contextmanager
def _signal_handlers_kept() -> Iterator[None]:
    """`reconcile` and `watch` install SIGINT/SIGTERM handlers for a graceful stop; a test worker keeps its own."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def run_on_terminal(args: list[str], cwd: Path, columns: int = 80, env: dict[str, str] | None = None,
                    on_output: Callable[[str], bool | None] | None = None) -> str:
    """Run the CLI with a pseudo-terminal of `columns` columns as stdout; its output, colours removed.
    `on_output` sees the output so far each time more arrives (to act on what the screen shows); when it
    returns True the process gets SIGTERM (to stop a daemon)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    full_env = {**os.environ, **GIT_ENV, "TERM": "xterm", "COLUMNS": str(columns), **(env or {})}
    full_env.pop("NO_COLOR", None)
    proc = subprocess.Popen([sys.executable, "-m", "reconciler", *args], cwd=cwd, stdin=slave, stdout=slave,
                            stderr=slave, env=full_env)
    os.close(slave)
    chunks = []
    stopped = False
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
        if on_output is not None and on_output(b"".join(chunks).decode("utf-8", "replace")) and not stopped:
            proc.send_signal(signal.SIGTERM)
            stopped = True
    os.close(master)
    assert proc.wait(60) == 0
    text = b"".join(chunks).decode("utf-8", "replace").replace("\r\n", "\n")
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)
