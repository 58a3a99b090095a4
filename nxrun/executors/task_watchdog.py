"""The watchdog of one nxrun run: when nxrun dies without saying goodbye (kill -9, a crash, the
second signal of a CI cancel), it stops the run's task processes, which run in sessions of their
own and so outlive nxrun otherwise.

nxrun starts it (`python -I -S task_watchdog.py TOKEN GRACE`) at its first cache miss and
writes lines to its stdin:

    +PGID   a task's process group started
    -PGID   that task's command has exited and been reaped
    bye     the run ended cleanly: exit and kill nothing

At the end of its input without `bye`, it sends SIGTERM to every registered group and to every
process whose environment carries the run's token (NXRUN_RUN_TOKEN: this finds a task's
processes that left its group, and one that started moments before nxrun could register it),
waits up to GRACE seconds for them to go, then SIGKILLs whatever is left. It ignores SIGINT,
SIGTERM and SIGHUP (a Ctrl-C or a cancel aimed at nxrun's process group must not stop it first)
and runs in a session of its own.

It also holds, without ever using it, the run's task-lock descriptor (task_locks.py): the run's
task locks stay taken until it exits, so a run started right after nxrun's death waits for the
sweep instead of running a task beside its orphan.

Only the standard library is imported: it starts in the time of a bare interpreter.
"""

from __future__ import annotations

import os
import signal
import sys
import time

TOKEN_VARIABLE = "NXRUN_RUN_TOKEN"


def read_registrations(stream) -> tuple[set[int], bool]:
    """(process groups still registered, whether `bye` came) from the lines of `stream`, read
    until its end."""
    groups: set[int] = set()
    for raw in stream:
        line = raw.strip()
        if line == b"bye":
            return groups, True
        if line[:1] in (b"+", b"-") and line[1:].isdigit():
            pgid = int(line[1:])
            if pgid > 1:
                (groups.add if line[:1] == b"+" else groups.discard)(pgid)
    return groups, False


def processes_with_token(token: str) -> set[int]:
    """Live processes (not zombies) whose environment holds TOKEN_VARIABLE=token (Linux /proc;
    empty elsewhere)."""
    wanted = f"{TOKEN_VARIABLE}={token}".encode()
    found: set[int] = set()
    if not token:
        return found
    try:
        names = os.listdir("/proc")
    except OSError:
        return found
    me = os.getpid()
    for name in names:
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as handle:
                environ = handle.read()
        except OSError:   # gone, or not ours to read
            continue
        if wanted in environ.split(b"\0"):
            found.add(int(name))
    return found


def _signal_all(groups: set[int], pids: set[int], sig: int) -> set[int]:
    """Send `sig` to each group and process; the groups that still exist."""
    alive = set()
    for pgid in groups:
        try:
            os.killpg(pgid, sig)
            alive.add(pgid)
        except (ProcessLookupError, PermissionError):
            pass
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
    return alive


def live_groups(groups) -> set[int]:
    """Those of `groups` that still have a member that is not a zombie (read from /proc in one
    pass); where there is no /proc, those that exist at all."""
    existing = set()
    for pgid in groups:
        try:
            os.killpg(pgid, 0)
            existing.add(pgid)
        except (ProcessLookupError, PermissionError):
            pass
    if not existing:
        return existing
    try:
        names = os.listdir("/proc")
    except OSError:
        return existing
    live = set()
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
            # fields after the command name: state, ppid, pgrp, ...
            pgid = int(fields[2])
        except (OSError, IndexError, ValueError):
            continue
        if pgid in existing and fields[0] not in (b"Z", b"X"):
            live.add(pgid)
    return live


def stop_everything(groups: set[int], token: str, grace: float) -> None:
    """SIGTERM every group and token-carrying process, wait up to `grace` seconds, SIGKILL the
    rest (looking for token-carrying processes again: a dying shell may have started one), and
    wait a moment for those to die."""
    groups = _signal_all(groups, processes_with_token(token), signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        groups = live_groups(groups)
        if not groups and not processes_with_token(token):
            return
        time.sleep(0.05)
    groups = _signal_all(groups, processes_with_token(token), signal.SIGKILL)
    # exit (and so give back the run's task locks) once they are really gone
    deadline = time.monotonic() + 2
    while groups and time.monotonic() < deadline:
        groups = live_groups(groups)
        time.sleep(0.01)


# ------------------------------------------------------------------ the side that starts it

def start(token: str, grace: float, pass_fds: tuple[int, ...] = ()):
    """Start a watchdog for the processes carrying `token` (a subprocess.Popen), or None when no
    process can be started (tasks still run, without that guard). By file, isolated and without
    site: it needs only the standard library, and no module of the current folder or of the
    environment can stand in for it."""
    import subprocess

    try:
        return subprocess.Popen([sys.executable, "-I", "-S", __file__, token, str(grace)],
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True, bufsize=0, pass_fds=pass_fds)
    except OSError:
        return None


def tell(watchdog, line: str) -> bool:
    """Send one line (`+PGID`, `-PGID`, `bye`); False when the watchdog is gone."""
    if watchdog is None or watchdog.stdin is None:
        return False
    try:
        watchdog.stdin.write(line.encode() + b"\n")
    except OSError:
        return False
    return True


def main(argv: list[str]) -> int:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    token = argv[1] if len(argv) > 1 else ""
    grace = float(argv[2]) if len(argv) > 2 else 5.0
    groups, clean = read_registrations(sys.stdin.buffer)
    if not clean:
        stop_everything(groups, token, grace)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
