"""One long-lived Spark driver shared by the scheduler's tasks.

Each Airflow task used to start its own Python and JVM: 20–30 s of start-up and cold JIT per task, thirteen a
night, more than the work itself on a small day. With ``DRC_SPARK_DRIVER=shared`` (the DAGs set it), a command
listed in config/pipeline.yaml (``shared_spark_driver``) runs in one driver process instead: the first task starts
it, later tasks connect over a Unix socket that only its owner can open, and it stops after ``idle_minutes``
without work. The task streams the command's output and returns its exit code, so Airflow's log, retries and
alerts work as before; a task killed mid-command cancels the command's Spark jobs and the command.

A driver is keyed by what a command's result depends on: the DRC_* settings, the interpreter, the code and the
configuration files. A task never runs under another environment's settings or stale code: a changed key gets
a driver of its own, and the old one idles out. When no driver can be started the command runs in the task.
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import io
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback
from contextlib import suppress
from pathlib import Path

from core.pipeline import load_pipeline
from core.settings import CONFIG_DIR, PROJECT_ROOT

MODE_VARIABLE = "DRC_SPARK_DRIVER"  # "shared": Airflow task, use the shared driver; "serving": inside it
CODE_PACKAGES = ("cli", "core", "ingestion", "spark_jobs", "expectations", "exports", "simulator", "superset")
START_TIMEOUT_S = 180
FRAME = struct.Struct(">cI")  # kind, length; kinds: s(tarted) o(ut) e(rr) x(exit code)


class StepCancelled(BaseException):
    """Raised in a command's thread when its task went away (a BaseException: retry loops must not catch it)."""


def wanted(argv: list[str]) -> bool:
    """Whether this command, run by this process, belongs in the shared driver."""
    return (
        os.environ.get(MODE_VARIABLE) == "shared"
        and bool(argv)
        and argv[0] in load_pipeline().shared_driver_commands
        and bool(os.environ.get("DRC_RUN_DIR"))
    )


def driver_key() -> str:
    """Fingerprint of the environment, interpreter, code and configuration a command's result depends on."""
    digest = hashlib.sha256()
    for name in sorted(os.environ):
        if (name.startswith(("DRC_", "SPARK_", "PYSPARK_")) or name == "JAVA_HOME") and name != MODE_VARIABLE:
            digest.update(f"{name}={os.environ[name]}\n".encode())
    digest.update(sys.executable.encode())
    files = [p for package in CODE_PACKAGES for p in (PROJECT_ROOT / package).rglob("*.py")]
    files += [p for p in CONFIG_DIR.rglob("*") if p.is_file()]
    for path in sorted(files):
        digest.update(f"{path}:{path.stat().st_mtime_ns}\n".encode())
    return digest.hexdigest()[:12]


def _paths(key: str) -> tuple[Path, Path, Path]:
    run_dir = Path(os.environ["DRC_RUN_DIR"])
    return run_dir / f"spark-driver-{key}.sock", run_dir / f"spark-driver-{key}.pid", run_dir / "spark-driver.lock"


# ---------------------------------------------------------------------------------------------------- client


def run_shared(argv: list[str]) -> int | None:
    """Run ``./drc argv`` in the shared driver and return its exit code; None: run it here instead."""
    key = driver_key()
    for _ in range(2):  # a driver that was just idling out closes without starting the command: start another
        conn = _connect(key) or _start(key)
        if conn is None:
            return None
        code = _stream(conn, argv)
        if code is not None:
            return code
    return None


def _connect(key: str) -> socket.socket | None:
    path = _paths(key)[0]
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(str(path))
    except OSError:
        conn.close()
        return None
    return conn


def _start(key: str) -> socket.socket | None:
    socket_path, _, lock_path = _paths(key)
    log_path = Path(os.environ.get("DRC_LOG_DIR", socket_path.parent)) / "spark-driver.log"
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two tasks starting at once start one driver
        conn = _connect(key)
        if conn:
            return conn
        socket_path.unlink(missing_ok=True)
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "cli.shared_driver", key],
                cwd=PROJECT_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # outlives the task that started it; ./drc stop ends its process group
            )
        print(f"starting the shared Spark driver {key} (pid {process.pid}; log {log_path})", file=sys.stderr)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline and process.poll() is None:
            conn = _connect(key)
            if conn:
                return conn
            time.sleep(0.5)
    print(f"the shared Spark driver did not start (see {log_path}); running the command here", file=sys.stderr)
    return None


def _stream(conn: socket.socket, argv: list[str]) -> int | None:
    """Send the command, copy its output; its exit code, or None when the driver closed before starting it."""
    started = False
    with conn, conn.makefile("rb") as frames:
        try:
            conn.sendall(json.dumps({"argv": argv}).encode() + b"\n")
        except OSError:
            return None
        while header := frames.read(FRAME.size):
            if len(header) < FRAME.size:
                break
            kind, length = FRAME.unpack(header)
            payload = frames.read(length)
            if kind == b"s":
                started = True
            elif kind in (b"o", b"e"):
                stream = sys.stdout if kind == b"o" else sys.stderr
                stream.write(payload.decode("utf-8", "replace"))
                stream.flush()
            elif kind == b"x":
                return int(payload)
    if not started:
        return None
    print("✘ the shared Spark driver stopped during the command (see .state/logs/spark-driver.log)", file=sys.stderr)
    return 1


# ---------------------------------------------------------------------------------------------------- driver


class _Sender:
    """Writes frames to one task's connection; a task that went away is ignored (its command is cancelled)."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn, self.lock = conn, threading.Lock()

    def send(self, kind: bytes, payload: bytes) -> None:
        with self.lock, suppress(OSError):
            self.conn.sendall(FRAME.pack(kind, len(payload)) + payload)


_routes: dict[int, _Sender] = {}  # command thread -> its task's connection


class _Router(io.TextIOBase):
    """sys.stdout / sys.stderr of the driver: text goes to the task whose command wrote it."""

    def __init__(self, kind: bytes, fallback: io.TextIOBase) -> None:
        self.kind, self.fallback = kind, fallback

    @property
    def encoding(self) -> str:
        return "utf-8"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:
        sender = _routes.get(threading.get_ident())
        if sender is None and len(_routes) == 1:  # a helper thread of the only running command
            sender = next(iter(_routes.values()), None)
        if sender is None:
            return self.fallback.write(text)
        sender.send(self.kind, text.encode("utf-8"))
        return len(text)

    def flush(self) -> None:
        self.fallback.flush()


class _Driver:
    def __init__(self, key: str, idle_seconds: float) -> None:
        from core.spark import get_spark

        self.key, self.idle_seconds = key, idle_seconds
        self.spark = get_spark()
        self.active, self.lock, self.last_work = 0, threading.Lock(), time.monotonic()

    def serve(self) -> None:
        socket_path, pid_path, _ = _paths(self.key)
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        umask = os.umask(0o177)  # the socket: owner only
        try:
            server.bind(str(socket_path))
        finally:
            os.umask(umask)
        server.listen(16)
        server.settimeout(5)
        pid_path.write_text(str(os.getpid()))
        self._log(f"ready on {socket_path}")
        try:
            while True:
                try:
                    conn, _ = server.accept()
                except TimeoutError:
                    with self.lock:
                        if not self.active and time.monotonic() - self.last_work > self.idle_seconds:
                            break
                    continue
                threading.Thread(target=self._run, args=(conn,), daemon=True).start()
        finally:
            server.close()
            socket_path.unlink(missing_ok=True)
            pid_path.unlink(missing_ok=True)
            self._log("idle: stopping")
            self.spark.stop()

    def _run(self, conn: socket.socket) -> None:
        from cli.main import main as drc_main

        with conn:
            argv = json.loads(conn.makefile("rb").readline())["argv"]
            sender, thread_id, group = _Sender(conn), threading.get_ident(), f"drc-{threading.get_ident()}"
            with self.lock:
                self.active += 1
            _routes[thread_id] = sender
            done = threading.Event()
            threading.Thread(target=self._watch, args=(conn, done, thread_id, group, argv), daemon=True).start()
            sender.send(b"s", b"")
            started = time.monotonic()
            try:
                self.spark.sparkContext.setJobGroup(group, " ".join(argv), interruptOnCancel=True)
                code = drc_main(argv)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
                if isinstance(exc.code, str):
                    sys.stderr.write(exc.code + "\n")
            except StepCancelled:
                code = 130
            except BaseException:  # the task gets the traceback and a failure, the driver lives on
                sys.stderr.write(traceback.format_exc())
                code = 1
            finally:
                done.set()
                del _routes[thread_id]
            sender.send(b"x", str(code).encode())
            with self.lock:
                self.active -= 1
                self.last_work = time.monotonic()
                if not self.active:
                    self.spark.catalog.clearCache()  # nothing cached by one command outlives it
            self._log(f"{' '.join(argv)}: exit {code} in {time.monotonic() - started:.1f} s")

    def _watch(self, conn: socket.socket, done: threading.Event, thread_id: int, group: str, argv: list[str]) -> None:
        """The task sends nothing more: end of stream before the command finished means the task was killed."""
        with suppress(OSError):
            conn.recv(1)
        if done.is_set():
            return
        self._log(f"{' '.join(argv)}: its task went away, cancelling")
        self.spark.sparkContext.cancelJobGroup(group)
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(StepCancelled))

    def _log(self, message: str) -> None:
        sys.__stderr__.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} spark-driver {self.key}: {message}\n")
        sys.__stderr__.flush()


def main(key: str) -> None:
    os.environ[MODE_VARIABLE] = "serving"  # commands run here do not forward again
    idle = load_pipeline().shared_driver_idle.total_seconds()
    driver = _Driver(key, idle)
    sys.stdout, sys.stderr = _Router(b"o", sys.__stdout__), _Router(b"e", sys.__stderr__)
    driver.serve()


if __name__ == "__main__":
    main(sys.argv[1])
