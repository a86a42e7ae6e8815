"""One run per output directory (``OUT/.faket-dask.lock``).

Unit tests of :mod:`faket_dask.runlock` with real processes holding (or having held) the lock,
then the real CLI: a second ``simulate`` on a live run's output is refused and changes nothing,
and a run killed with SIGKILL resumes when started again.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from faket_dask.runlock import LOCK_NAME, LockInfo, RunLock, RunLockedError, read_lock
from pipeline_helpers import EXE, TINY, cli, env, write_config

HOST = socket.gethostname()

# A real process that takes the lock on argv[1], says so, and holds it until it is stopped.
HOLDER = """
import sys, time
from faket_dask.runlock import RunLock
with RunLock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(300)
"""


def start_holder(out: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def write_record(out: Path, **fields) -> Path:
    """A lock file as a run would leave it (no process holds a flock on it)."""
    record = {"pid": 1, "host": HOST, "create_time": 0.0, "user": "someone",
              "command": "faket-dask simulate run.yaml", "started": "2026-01-01T00:00:00+00:00"}
    record.update(fields)
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_NAME
    path.write_text(json.dumps(record))
    return path


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


# -- unit tests ------------------------------------------------------------------------------
def test_lock_records_the_run_and_is_removed_with_the_directories_it_made(tmp_path):
    out = tmp_path / "new" / "out"
    with RunLock(out) as lock:
        record = json.loads((out / LOCK_NAME).read_text())
        assert record["pid"] == os.getpid() and record["host"] == HOST
        assert record["create_time"] == psutil.Process().create_time()
        assert {"user", "command", "started"} <= set(record)
        assert lock.held and read_lock(out) == lock.info
    assert not (tmp_path / "new").exists()  # made for the lock, still empty: removed

    kept = tmp_path / "kept"
    kept.mkdir()
    with RunLock(kept / "out") as lock:
        (kept / "out" / "result.txt").write_text("x")
    assert not lock.held
    assert sorted(p.name for p in (kept / "out").iterdir()) == ["result.txt"]


def test_live_run_is_refused_and_its_lock_taken_over_once_it_is_killed(tmp_path):
    out = tmp_path / "out"
    holder = start_holder(out)
    try:
        lock_file = out / LOCK_NAME
        before = (lock_file.read_bytes(), lock_file.stat().st_mtime_ns)
        with pytest.raises(RunLockedError) as err:
            RunLock(out).acquire()
        msg = str(err.value)
        assert msg.startswith(f"{out}: in use by another run (pid {holder.pid} on host {HOST}, started ")
        assert msg.endswith("; wait for it or stop it") and "\n" not in msg
        assert (lock_file.read_bytes(), lock_file.stat().st_mtime_ns) == before
    finally:
        holder.kill()  # SIGKILL: no cleanup runs in the holder
        holder.wait()
    assert read_lock(out).pid == holder.pid  # left behind by the killed holder
    notices: list[str] = []
    with RunLock(out, notify=notices.append) as lock:
        assert lock.info.pid == os.getpid()
    assert len(notices) == 1
    assert f"pid {holder.pid} on host {HOST}" in notices[0] and "no longer running" in notices[0]
    assert not (out / LOCK_NAME).exists()


def test_dead_pid_on_this_host_is_stale(tmp_path):
    write_record(tmp_path, pid=dead_pid())
    notices: list[str] = []
    with RunLock(tmp_path, notify=notices.append):
        pass
    assert len(notices) == 1 and "taking over its lock" in notices[0]


def test_reused_pid_with_another_start_time_is_stale(tmp_path):
    # our own pid, but "started" long before this process: the pid was reused
    write_record(tmp_path, pid=os.getpid(), create_time=psutil.Process().create_time() - 1000.0)
    notices: list[str] = []
    with RunLock(tmp_path, notify=notices.append):
        pass
    assert len(notices) == 1


def test_live_holder_without_a_flock_counts_as_live(tmp_path):
    # What a run on a file system that does not share flocks leaves: a record, no flock.
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        write_record(tmp_path, pid=sleeper.pid, create_time=psutil.Process(sleeper.pid).create_time())
        with pytest.raises(RunLockedError, match=f"pid {sleeper.pid} on host {HOST}"):
            RunLock(tmp_path).acquire()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_holder_on_another_host_counts_as_live(tmp_path):
    path = write_record(tmp_path, pid=dead_pid(), host="other-node-17")
    with pytest.raises(RunLockedError) as err:
        RunLock(tmp_path).acquire()
    msg = str(err.value)
    assert "on host other-node-17" in msg and f"delete {path}" in msg
    assert path.exists()


def test_empty_or_corrupt_lock_file_without_holder_is_taken(tmp_path):
    (tmp_path / LOCK_NAME).write_text("{not json")
    with RunLock(tmp_path) as lock:
        assert read_lock(tmp_path) == lock.info


def test_released_on_exception_and_refused_twice_in_one_process(tmp_path):
    with pytest.raises(ValueError):
        with RunLock(tmp_path):
            with pytest.raises(RunLockedError, match=f"pid {os.getpid()}"):
                RunLock(tmp_path).acquire()
            raise ValueError("a stage failed")
    assert not (tmp_path / LOCK_NAME).exists()
    with RunLock(tmp_path):
        pass


def test_sigterm_releases_the_lock(tmp_path):
    holder = start_holder(tmp_path)
    holder.send_signal(signal.SIGTERM)
    assert holder.wait(timeout=30) == 128 + signal.SIGTERM
    assert not (tmp_path / LOCK_NAME).exists()


def test_lock_info_parse_rejects_non_records():
    assert LockInfo.parse("") is None
    assert LockInfo.parse("[1, 2]") is None
    assert LockInfo.parse('{"pid": "x", "host": "h", "create_time": 1}') is None


# -- the real CLI ----------------------------------------------------------------------------
def start_run(cfg: Path, log: Path) -> subprocess.Popen:
    """``faket-dask simulate`` in its own session (so its worker processes can be signalled too)."""
    return subprocess.Popen([EXE, "simulate", str(cfg), "--workers", "1"], stdout=log.open("w"),
                            stderr=log.with_suffix(".err").open("w"), env=env(), start_new_session=True)


def wait_for(proc: subprocess.Popen, log: Path, text: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        assert proc.poll() is None, f"run ended early:\n{log.read_text()}\n{log.with_suffix('.err').read_text()}"
        assert time.monotonic() < deadline, f"no '{text}' after {timeout} s:\n{log.read_text()}"
        time.sleep(0.5)


def snapshot(path: Path) -> dict[Path, tuple[int, int]]:
    return {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(path.rglob("*"))}


@pytest.mark.slow
def test_second_run_on_a_live_runs_output_is_refused_and_changes_nothing(tmp_path):
    # more particles than the tiny volume holds: the run warns (checked at the end)
    cfg = write_config(tmp_path / "run.yaml", specimens={**TINY["specimens"], "particles": 400})
    out = tmp_path / "out"
    log = tmp_path / "a.log"
    a = start_run(cfg, log)
    try:
        wait_for(a, log, "[run ] noiseless")  # the store exists and stages are recorded
        assert (out / LOCK_NAME).exists()
        # Freeze run A (and its workers) so any change to its output can only come from B.
        os.killpg(a.pid, signal.SIGSTOP)
        try:
            before = snapshot(out)
            b = cli("simulate", cfg, "--workers", "1", timeout=120)
            after = snapshot(out)
        finally:
            os.killpg(a.pid, signal.SIGCONT)
        assert b.returncode == 2, b.stderr[-2000:]
        lines = b.stderr.strip().splitlines()
        assert len(lines) == 1, b.stderr
        assert lines[0].startswith(f"faket-dask: error: {out}: in use by another run (pid {a.pid} on host {HOST}, "
                                   "started "), lines[0]
        assert lines[0].endswith("wait for it or stop it")
        assert b.stdout == ""  # not even "resuming run": refused before planning
        assert after == before
        assert a.wait(timeout=600) == 0, log.with_suffix(".err").read_text()[-3000:]
    finally:
        if a.poll() is None:
            os.killpg(a.pid, signal.SIGKILL)
            a.wait()
    err = log.with_suffix(".err").read_text()
    assert "Traceback" not in err
    # simulate's own warnings (crowded tiny specimens) are one line each, no source location
    assert "faket-dask: warning: placed" in err and "warnings.warn(" not in err and ".py:" not in err
    assert not (out / LOCK_NAME).exists() and (out / "summary.json").exists()


@pytest.mark.slow
def test_run_killed_with_sigkill_resumes_when_started_again(tmp_path):
    cfg = write_config(tmp_path / "run.yaml")
    out = tmp_path / "out"
    log = tmp_path / "a.log"
    a = start_run(cfg, log)
    try:
        wait_for(a, log, "[run ] noise_model")  # specimens, noiseless and measured are complete
    finally:
        os.killpg(a.pid, signal.SIGKILL)  # the run and its Dask workers, without any cleanup
        a.wait()
    assert read_lock(out).pid == a.pid
    rerun = cli("simulate", cfg, "--workers", "1")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"(pid {a.pid} on host {HOST}, started " in rerun.stdout
    assert "is no longer running; taking over its lock" in rerun.stdout
    assert "resuming run" in rerun.stdout and "[skip] specimen/000 (complete)" in rerun.stdout
    assert not (out / LOCK_NAME).exists()
