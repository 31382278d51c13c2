"""Processes a test started, and whatever they started: run a command in a session of its
own, then check that nothing of that session outlives it (the reliability issue's "no
orphan process")."""
import os
import random
import signal
import subprocess
import tempfile
import time
from pathlib import Path


def _stat_fields(pid: int) -> list:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie has finished)."""
    try:
        return _stat_fields(pid)[0] != "Z"
    except OSError:
        return False


def children(pid: int) -> list:
    """PIDs of the live descendants of ``pid``."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = _stat_fields(int(stat.parent.name))
        except (OSError, IndexError):
            continue
        if fields[0] != "Z":
            parents[int(stat.parent.name)] = int(fields[1])
    found, todo = [], [pid]
    while todo:
        pid = todo.pop()
        kids = [p for p, parent in parents.items() if parent == pid]
        found += kids
        todo += kids
    return found


def session_members(session: int) -> list:
    """Live processes of the session led by ``session`` (field 6 of /proc/PID/stat)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = _stat_fields(int(stat.parent.name))
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[3]) == session:
            found.append(int(stat.parent.name))
    return found


def assert_no_orphans(session: int, grace: float = 5.0) -> None:
    """Nothing started in ``session`` is still running ``grace`` seconds after its leader ended;
    survivors are killed so that one failure does not poison the next test."""
    deadline = time.time() + grace
    while time.time() < deadline and session_members(session):
        time.sleep(0.1)
    left = session_members(session)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"processes outlived the command: {left}"


def start(args, **options) -> subprocess.Popen:
    """``subprocess.Popen`` in a new session (its PID is the session's id)."""
    return subprocess.Popen(list(map(str, args)), start_new_session=True, **options)


def run(args, timeout: float = 300, **options) -> subprocess.CompletedProcess:
    """``subprocess.run(args, capture_output=True, text=True)`` in a session of its own, then
    :func:`assert_no_orphans`."""
    proc = start(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **options)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert_no_orphans(proc.pid)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def kill_at_random_points(args, kills: int, longest: float, seed: int) -> int:
    """Run ``args`` to the end, killing its main process with SIGKILL ``kills`` times at
    random moments between 30% and 80% of ``longest`` seconds after each start (checking each
    time that nothing it started survives it); return how many kills landed before it finished."""
    moments = random.Random(seed)
    landed = 0
    for _ in range(kills + 1):
        stderr = tempfile.TemporaryFile("w+")  # a pipe could fill up and stall the command
        proc = start(args, stdout=subprocess.DEVNULL, stderr=stderr, text=True)
        try:
            proc.wait(moments.uniform(0.3, 0.8) * longest if landed < kills else 600)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            landed += 1
        assert_no_orphans(proc.pid)
        if proc.returncode == 0:
            return landed
        stderr.seek(0)
        assert proc.returncode == -signal.SIGKILL, stderr.read()
    raise AssertionError("still not finished after every kill")
