"""Airflow tasks share one long-lived Spark driver: later tasks skip the JVM start, output and exit codes reach
the task, a killed task cancels its command, and a different environment never runs in another's driver."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from cli import shared_driver
from core.settings import PROJECT_ROOT

RUN_DIR = Path(os.environ["DRC_RUN_DIR"])
DRIVER_LOG = Path(os.environ["DRC_LOG_DIR"]) / "spark-driver.log"


def _task(*argv: str, **popen) -> subprocess.Popen:
    """A command as an Airflow task runs it."""
    env = {**os.environ, shared_driver.MODE_VARIABLE: "shared"}
    return subprocess.Popen(
        [str(PROJECT_ROOT / "drc"), *argv],
        env=env,
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **popen,
    )


def _run_task(*argv: str) -> tuple[int, str, float]:
    started = time.monotonic()
    task = _task(*argv)
    output, _ = task.communicate(timeout=600)
    return task.returncode, output, time.monotonic() - started


def _driver_pid() -> int:
    (pid_file,) = RUN_DIR.glob(f"spark-driver-{shared_driver.driver_key()}.pid")
    return int(pid_file.read_text())


def test_tasks_share_one_driver_and_get_their_output_and_exit_code(pipeline_done):
    code, output, _ = _run_task("silver", "report")
    assert code == 0, output
    report = "隔离数据" if "隔离数据" in output else "nothing in quarantine"
    assert report in output, f"the command's output reaches the task: {output}"
    driver = _driver_pid()
    code, output, warm = _run_task("silver", "report")
    assert code == 0 and report in output
    assert _driver_pid() == driver, "the second task ran in the same driver"
    assert warm < 15, f"a task in the running driver starts no JVM ({warm:.1f} s)"
    code, output, _ = _run_task("silver", "--no-such-option")
    assert code == 2 and "unrecognized arguments" in output, "a failing command fails its task"
    socket_path = RUN_DIR / f"spark-driver-{shared_driver.driver_key()}.sock"
    assert oct(socket_path.stat().st_mode & 0o777) == "0o600", "only the platform's user can send it commands"


def test_a_killed_task_cancels_its_command_in_the_driver(pipeline_done):
    seen = DRIVER_LOG.stat().st_size if DRIVER_LOG.exists() else 0
    task = _task("ingest", "--source", "fy_files", "--follow", "2", start_new_session=True)
    while task.poll() is None and "采集" not in task.stdout.readline():
        pass  # the command has started in the driver
    assert task.poll() is None, "the command runs until its task is stopped"
    os.killpg(task.pid, signal.SIGKILL)  # what Airflow does to a task it times out or that an operator stops
    task.wait()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        log = DRIVER_LOG.read_bytes()[seen:].decode("utf-8", "replace")
        if "ingest --source fy_files --follow 2: exit 130" in log:
            break
        time.sleep(1)
    assert "ingest --source fy_files --follow 2: its task went away, cancelling" in log
    assert "ingest --source fy_files --follow 2: exit 130" in log, "the command stopped with its task"


def test_a_different_environment_or_changed_code_gets_its_own_driver(monkeypatch, tmp_path):
    key = shared_driver.driver_key()
    monkeypatch.setenv("DRC_SIM_SCALE", "county")
    assert shared_driver.driver_key() != key, "settings differ: another driver"
    monkeypatch.undo()
    assert shared_driver.driver_key() == key
    touched = PROJECT_ROOT / "cli" / "shared_driver.py"
    stat = touched.stat()
    try:
        os.utime(touched, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
        assert shared_driver.driver_key() != key, "code changed since the driver started: another driver"
    finally:
        os.utime(touched, ns=(stat.st_atime_ns, stat.st_mtime_ns))
