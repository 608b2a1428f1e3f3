"""Service processes for the tests without paying Python's start each time.

A service start is ~1.8 CPU-s, 1.1-1.3 of it imports (pydantic models, numpy,
trio, hypercorn, ...), and the suite starts about 90 of them on two cores:
100 s of its ~650 CPU-s (``python -X importtime``, a per-process CPU log of a
whole run, 2026-12-03). Here one interpreter per test worker (the *zygote*)
imports RTAP once and forks a child for each ``python -m rtap_trio ARGS`` a
test starts; the child runs ``rtap_trio.cli.main(ARGS)``, the code a fresh
interpreter runs, with the caller's environment, working directory and
standard streams.

So that tests keep :class:`subprocess.Popen` (pipes, ``communicate``, timeouts,
``send_signal``, ``kill``), what they start is a *relay*: a bare ``python -S``
(~20 ms) that hands its argv, environment, working directory and standard
streams to the zygote over a Unix socket, forwards the signals it gets to the
child and exits as the child did (by the same signal, if the child was
killed). A relay killed with SIGKILL closes its socket, and the zygote kills
the child at once: ``process.kill()`` still kills the service.
:func:`service_pid` is the child's pid, for tests that read ``/proc``.

The tests of how a user starts RTAP (the README's demo, a replay) keep the real
``python -m rtap_trio``; ``RTAP_TEST_FORKSERVER=0`` turns the zygote off for a
whole run.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

__all__ = ["rtap_command", "service_pid", "stop"]

REPO = Path(__file__).resolve().parents[1]

#: What a test runs for ``python -m rtap_trio``: connect, pass the streams, wait.
_RELAY = """
import json, os, signal, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.connect(sys.argv[1])
request = {"args": sys.argv[2:], "env": dict(os.environ), "cwd": os.getcwd()}
socket.send_fds(s, [json.dumps(request).encode()], [0, 1, 2])
child = int(s.recv(64) or 0)
if child <= 0:  # no fork server answered; never signal pid 0, the whole group
    os._exit(70)
def forward(signum, frame):
    try:
        os.kill(child, signum)
    except ProcessLookupError:
        pass
for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT,
               signal.SIGUSR1, signal.SIGUSR2):
    signal.signal(signum, forward)
status = s.recv(64)
code = int(status) if status else 70
if code < 0:
    signal.signal(-code, signal.SIG_DFL)
    os.kill(os.getpid(), -code)
os._exit(code & 0xFF)
"""

#: Imported by the zygote: the service, its command line and what a start loads.
_PRELOADED = (
    "rtap_trio.app",
    "rtap_trio.cli",
    "rtap_trio.allocator",
    "rtap_trio.logs",
    "rtap_trio.audio.file",
    "rtap_trio.stt.whispercpp.context",
    "rtap_trio.turn.smart_turn",
    "pywhispercpp.model",
)

#: The handlers a fresh interpreter starts with where they are not the default
#: (SIGPIPE stays ignored, as the zygote inherited it from its own start).
_PYTHON_DEFAULT_SIGNALS = {signal.SIGINT: signal.default_int_handler}


class _Zygote:
    """The server process: forks one child per request, reports its exit."""

    def __init__(self, path: str) -> None:
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.listener.bind(path)
        self.listener.listen(64)
        self.pid_dir = Path(path).parent / "pids"
        self.pid_dir.mkdir()
        self.children: dict[int, socket.socket] = {}  # child pid -> its relay
        self.relays: dict[socket.socket, int] = {}
        self.pid_files: dict[int, Path] = {}  # child pid -> the file naming it by its relay
        self.parent = os.getppid()
        self.stopping = False
        wake_read, wake_write = os.pipe()
        os.set_blocking(wake_read, False)
        os.set_blocking(wake_write, False)
        self.wake = wake_read
        signal.set_wakeup_fd(wake_write)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, self._stop)

    def _stop(self, *_: object) -> None:
        self.stopping = True

    def serve(self) -> None:
        while not self.stopping and os.getppid() == self.parent:
            readable, _, _ = select.select([self.listener, self.wake, *self.relays], [], [], 1.0)
            for ready in readable:
                if ready is self.listener:
                    self._start(*self.listener.accept())
                elif ready == self.wake:
                    while True:
                        try:
                            os.read(self.wake, 512)
                        except BlockingIOError:
                            break
                elif isinstance(ready, socket.socket) and not ready.recv(64):
                    # The relay is gone before its child: killed, as a test kills
                    # a process. Its child goes the same way.
                    self._kill(self.relays.pop(ready), signal.SIGKILL)
                    ready.close()
            self._reap()
        for pid in list(self.children):
            self._kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while self.children and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.05)

    def _kill(self, pid: int, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            relay = self.children.pop(pid, None)
            pid_file = self.pid_files.pop(pid, None)
            if pid_file is not None:
                pid_file.unlink(missing_ok=True)
            if relay is not None and self.relays.pop(relay, None) is not None:
                with contextlib.suppress(OSError):
                    relay.send(str(os.waitstatus_to_exitcode(status)).encode())
                relay.close()

    def _start(self, relay: socket.socket, _: object) -> None:
        try:
            message, fds, _flags, _address = socket.recv_fds(relay, 1 << 20, 3)
            request = json.loads(message)
            creds = relay.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
            relay_pid = int.from_bytes(creds[:4], sys.byteorder)
        except (OSError, ValueError):
            relay.close()
            return
        pid = os.fork()
        if pid == 0:
            code = 70
            try:
                code = _run_child(request, fds)
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        for fd in fds:
            os.close(fd)
        self.pid_files[pid] = self.pid_dir / str(relay_pid)
        self.pid_files[pid].write_text(str(pid))
        self.children[pid] = relay
        self.relays[relay] = pid
        with contextlib.suppress(OSError):  # a relay gone already: its EOF kills the child
            relay.send(str(pid).encode())


def _run_child(request: dict[str, object], fds: list[int]) -> int:
    """In the forked child: become ``python -m rtap_trio ARGS``; returns the exit code."""
    import rtap_trio

    signal.set_wakeup_fd(-1)
    for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _PYTHON_DEFAULT_SIGNALS.get(signum, signal.SIG_DFL))
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))  # the zygote's sockets, the passed copies
    env = request["env"]
    assert isinstance(env, dict)
    os.environ.clear()
    os.environ.update(env)
    os.chdir(str(request["cwd"]))
    unbuffered = bool(env.get("PYTHONUNBUFFERED"))
    sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115
    sys.stdout = open(  # noqa: SIM115
        1, "w", encoding="utf-8", closefd=False, buffering=1 if unbuffered else -1
    )
    sys.stderr = open(  # noqa: SIM115
        2, "w", encoding="utf-8", errors="backslashreplace", closefd=False, buffering=1
    )
    sys.dont_write_bytecode = bool(env.get("PYTHONDONTWRITEBYTECODE"))
    args = request["args"]
    assert isinstance(args, list)
    sys.argv = [str(Path(rtap_trio.__file__ or "").with_name("__main__.py")), *map(str, args)]
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as rtap_trio/__main__.py does
    from rtap_trio.cli import main

    try:
        code: object = main(sys.argv[1:])
    except SystemExit as exc:
        code = exc.code
    except BaseException:
        traceback.print_exc()
        code = 1
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    return code


def _serve(path: str) -> None:
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    # What every service start imports; imported here once, before any fork.
    # Not onnxruntime: its import starts a thread, and a fork copies only the
    # thread that forks.
    for module in _PRELOADED:
        importlib.import_module(module)

    threads = len(os.listdir("/proc/self/task"))
    if threads != 1:  # a fork would copy a process with threads it cannot have
        raise SystemExit(f"the fork server has {threads} threads after its imports")
    _Zygote(path).serve()


class _Server:
    """The zygote of this test process, started on first use."""

    def __init__(self) -> None:
        self.folder = tempfile.mkdtemp(prefix="rtap-forkserver-")
        self.path = os.path.join(self.folder, "socket")
        self.process = subprocess.Popen(
            [sys.executable, "-c", f"from tests.forkserver import _serve; _serve({self.path!r})"],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while not os.path.exists(self.path):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the tests' fork server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


_server: list[_Server] = []


def rtap_command() -> list[str]:
    """The command line for ``python -m rtap_trio`` in a test: the relay, or the real one."""
    if os.environ.get("RTAP_TEST_FORKSERVER", "1") == "0":
        return [sys.executable, "-m", "rtap_trio"]
    if not _server:
        _server.append(_Server())
    return [sys.executable, "-S", "-c", _RELAY, _server[0].path]


def service_pid(process: subprocess.Popen[str] | subprocess.Popen[bytes]) -> int:
    """The pid of the service ``process`` runs: its forked child, or itself."""
    if not _server or process.args[:2] != [sys.executable, "-S"]:
        return process.pid
    pid_file = Path(_server[0].folder) / "pids" / str(process.pid)
    deadline = time.monotonic() + 10  # the relay may not have handed over yet
    while process.poll() is None and time.monotonic() < deadline:
        try:
            return int(pid_file.read_text())
        except (OSError, ValueError):
            time.sleep(0.01)
    raise AssertionError(f"no service forked for relay {process.pid}")


def stop() -> None:
    """Stop this process's zygote (its children with it)."""
    while _server:
        _server.pop().stop()
