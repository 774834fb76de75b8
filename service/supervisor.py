"""The embedded mode's children kept running: a child that dies is logged and started again.

:class:`Supervisor` starts each :class:`Program` in a session of its own (so that a Ctrl-C in the
terminal reaches ``mrisynth serve`` only, which stops the children in order) and polls them from a
thread every ``POLL_INTERVAL_S``. A child that ended is started again after a backoff:
``FIRST_BACKOFF_S``, doubled at each restart up to ``MAX_BACKOFF_S``, back to ``FIRST_BACKOFF_S`` once
a child has lived ``STABLE_AFTER_S``. What a dead child leaves in its session is killed with it: a
worker's work-horse, which RQ forks into a process group of its own, would run on without anyone to
renew its job's heartbeat, while RQ retries that job elsewhere.

The supervisor keeps the pid and start time of every running child in a JSON file, so that a
``mrisynth serve`` started after this one was killed (``kill -9``, the OOM killer) can kill the
children it left behind (:func:`kill_leftovers`) before it starts its own on the same files. The
processes are found in ``/proc`` (Linux); elsewhere nothing is cleaned up after a crash.
"""

import json
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.2
"""How often the supervisor looks at its children."""

FIRST_BACKOFF_S = 0.5
"""Wait before the first restart of a child that died."""

MAX_BACKOFF_S = 30.0
"""Longest wait before a restart; the wait doubles from ``FIRST_BACKOFF_S`` at each restart."""

STABLE_AFTER_S = 60.0
"""A child that lived this long before it died is restarted after ``FIRST_BACKOFF_S`` again."""

PROC = Path("/proc")


@dataclass(frozen=True)
class Program:
    """A child process to keep running.

    Attributes:
        name: its name in the log and in the pid file, e.g. ``redis-server`` or ``worker 1``; unique.
        command: its command line.
        environment: its environment; None (default): this process's.
    """

    name: str
    command: tuple[str, ...]
    environment: Mapping[str, str] | None = None


@dataclass
class _Child:
    """A program's current process and when it is due to be started again (None: it runs)."""

    program: Program
    process: subprocess.Popen
    started_at: float = field(default_factory=time.monotonic)
    backoff_s: float = FIRST_BACKOFF_S
    restart_at: float | None = None


def start_time(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, from ``/proc``); None if there is no such
    live process, it is a zombie, or there is no ``/proc``."""
    try:
        fields = (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == "Z" else int(fields[19])


def session_members(session: int) -> list[int]:
    """Pids of the live processes (not zombies) of a session; the children started here lead their own."""
    members = []
    for entry in PROC.glob("[0-9]*"):
        try:
            pid = int(entry.name)
            if os.getsid(pid) == session and start_time(pid) is not None:
                members.append(pid)
        except (OSError, ValueError):
            continue
    return members


def _ending(code: int) -> str:
    """How a process ended, from its ``Popen.returncode``."""
    if code >= 0:
        return f"exit status {code}"
    try:
        return f"killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"killed by signal {-code}"


def kill_session(session: int) -> None:
    """SIGKILL every process of a session: what a child left behind, such as a work-horse."""
    for pid in session_members(session):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
        log.info("killed pid %d, left behind in the session of pid %d", pid, session)


def kill_leftovers(pid_file: Path) -> None:
    """Kill the children that a killed ``mrisynth serve`` left running (read from its ``pid_file``).

    Each is killed with its whole session, the last started first (workers before Redis); a pid is
    taken for a leftover only when its start time is the recorded one, so a reused pid is left alone.
    Redis runs with ``appendfsync always``, so SIGKILL loses nothing that it acknowledged.
    """
    try:
        entries = json.loads(pid_file.read_text())
    except FileNotFoundError:
        return
    except (OSError, ValueError) as error:
        log.warning("cannot read %s, no leftover children killed: %s", pid_file, error)
        return
    for entry in reversed(entries):
        name, pid = entry["name"], entry["pid"]
        if start_time(pid) != entry["start_time"]:
            continue
        kill_session(pid)
        deadline = time.monotonic() + 10.0
        while start_time(pid) is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        log.warning("killed %s (pid %d), left running by a mrisynth serve that did not stop", name, pid)
    pid_file.unlink(missing_ok=True)


class Supervisor:
    """Starts programs and, once :meth:`watch` is called, restarts each one that ends.

    Args:
        pid_file: where the running children's names, pids and start times are kept (JSON), rewritten
            at each start and removed by :meth:`close`.
    """

    def __init__(self, pid_file: Path) -> None:
        self.pid_file = pid_file
        self._children: dict[str, _Child] = {}
        self._lock = threading.Lock()
        self._halted = threading.Event()
        self._thread = threading.Thread(target=self._run, name="supervisor", daemon=True)

    def start(self, program: Program) -> subprocess.Popen:
        """Start ``program`` now, in a session of its own, and supervise it.

        Raises:
            OSError: the program could not be started.
        """
        process = self._spawn(program)
        with self._lock:
            self._children[program.name] = _Child(program, process)
            self._save_pids()
        return process

    def supervises(self, name: str) -> bool:
        """Whether a program called ``name`` was started."""
        with self._lock:
            return name in self._children

    def process(self, name: str) -> subprocess.Popen:
        """The current process of the program called ``name``."""
        with self._lock:
            return self._children[name].process

    def watch(self) -> None:
        """Start restarting children that end, from a thread."""
        self._thread.start()

    def halt(self) -> None:
        """Stop restarting children (before they are stopped); the children run on."""
        self._halted.set()
        if self._thread.is_alive():
            self._thread.join()

    def close(self) -> None:
        """Forget the pids: the children were stopped."""
        self.pid_file.unlink(missing_ok=True)

    def _spawn(self, program: Program) -> subprocess.Popen:
        environment = None if program.environment is None else dict(program.environment)
        return subprocess.Popen(program.command, env=environment, start_new_session=True)

    def _save_pids(self) -> None:
        """Write the pid file (atomically: a crash leaves the old one or the new one)."""
        entries = [
            {"name": name, "pid": child.process.pid, "start_time": start_time(child.process.pid)}
            for name, child in self._children.items()
        ]
        partial = self.pid_file.with_name(f".{self.pid_file.name}.part")
        try:
            partial.write_text(json.dumps(entries))
            os.replace(partial, self.pid_file)
        except OSError as error:
            log.warning(
                "cannot write %s, a later start cannot clean up after a crash: %s", self.pid_file, error
            )

    def _run(self) -> None:
        while not self._halted.wait(POLL_INTERVAL_S):
            with self._lock:
                for child in self._children.values():
                    self._check(child)

    def _check(self, child: _Child) -> None:
        """Schedule the restart of a child that ended; restart it when it is due."""
        now, name = time.monotonic(), child.program.name
        if child.restart_at is None:
            code = child.process.poll()
            if code is None:
                return
            lived = now - child.started_at
            if lived >= STABLE_AFTER_S:
                child.backoff_s = FIRST_BACKOFF_S
            kill_session(child.process.pid)
            child.restart_at = now + child.backoff_s
            log.warning(
                "%s (pid %d) ended (%s) after %.1f s: restarting it in %.1f s",
                name,
                child.process.pid,
                _ending(code),
                lived,
                child.backoff_s,
            )
            child.backoff_s = min(2 * child.backoff_s, MAX_BACKOFF_S)
            return
        if now < child.restart_at:
            return
        try:
            child.process = self._spawn(child.program)
        except OSError as error:
            child.restart_at = now + child.backoff_s
            log.error("%s could not be restarted, trying again in %.1f s: %s", name, child.backoff_s, error)
            child.backoff_s = min(2 * child.backoff_s, MAX_BACKOFF_S)
            return
        child.started_at, child.restart_at = now, None
        self._save_pids()
        log.warning("restarted %s (pid %d)", name, child.process.pid)
