"""What a run prints: task output streamed with a task prefix, replayed logs of hits, warnings,
a live status line on a terminal and plain lines elsewhere. `NO_COLOR` is respected.
"""

from __future__ import annotations

import os
import threading
import time

_COLORS = ["36", "35", "33", "32", "34", "96", "95", "93", "92", "94"]
_STATUS_COLORS = {"local-hit": "32", "remote-hit": "36", "miss": "33", "failed": "31", "skipped": "90",
                  "predicted-hit": "32", "predicted-miss": "33", "unknown": "90"}


def use_colour(stream) -> bool:
    """ANSI colour only on a terminal, and not under NO_COLOR or TERM=dumb."""
    isatty = getattr(stream, "isatty", lambda: False)()
    return isatty and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


class _Discard:
    """Where the text for a closed stream goes: Python sets sys.stdout or sys.stderr to None when
    its descriptor was closed before the start, and a run's lines must not land on the other one
    (under --json, stdout holds the summary alone)."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


class GuardedStream:
    """A stream that keeps its first write error (a full disk, a pipe whose reader left, a closed
    file) instead of raising it, and writes nothing after. What a run prints must never fail its
    tasks or turn a hit into a failed restore; the run reports the error once, at its end."""

    def __init__(self, stream):
        self._stream = stream if stream is not None else _Discard()
        self.error: Exception | None = None

    def write(self, text: str) -> None:
        if self.error is None:
            try:
                self._stream.write(text)
            except (OSError, ValueError) as exc:    # ValueError: "I/O operation on closed file"
                self.error = exc

    def flush(self) -> None:
        if self.error is None:
            try:
                self._stream.flush()
            except (OSError, ValueError) as exc:
                self.error = exc

    def isatty(self) -> bool:
        try:
            return bool(getattr(self._stream, "isatty", lambda: False)())
        except ValueError:
            return False

    def fileno(self) -> int:
        return self._stream.fileno()


class Console:
    def __init__(self, *, stream, prefix_tasks: bool = True, live: bool | None = None,
                 quiet: bool = False):
        """`stream`: where the lines go (None: a closed stream, nowhere)."""
        self.stream = GuardedStream(stream)
        self.lock = threading.RLock()
        self.color = use_colour(self.stream)
        self.live = getattr(self.stream, "isatty", lambda: False)() if live is None else live
        self.prefix_tasks = prefix_tasks
        self.quiet = quiet
        self._task_colors: dict[str, str] = {}
        self._running: dict[str, float] = {}
        self._gpus: dict[str, str] = {}      # task id -> the GPU ids it holds, as shown
        self.counts = {"done": 0, "hits": 0, "failed": 0, "total": 0}
        self._started = time.monotonic()
        self._status_shown = False
        self._ticker: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def write_error(self) -> Exception | None:
        """The error that stopped this console's output, if one did."""
        return self.stream.error

    # ---------------------------------------------------------------- helpers
    def _paint(self, text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.color else text

    def _prefix(self, task_id: str) -> str:
        if not self.prefix_tasks:
            return ""
        code = self._task_colors.setdefault(task_id, _COLORS[len(self._task_colors) % len(_COLORS)])
        return self._paint(task_id, code) + " | "

    def _write(self, text: str) -> None:
        if self._status_shown:
            self.stream.write("\r\033[K")
            self._status_shown = False
        self.stream.write(text)
        if self.live:
            self._draw_status()
        self.stream.flush()

    def _draw_status(self) -> None:
        if not self._running and not self.counts["total"]:
            return
        elapsed = time.monotonic() - self._started
        running = ", ".join(t + (f" [GPU {self._gpus[t]}]" if t in self._gpus else "")
                            for t in sorted(self._running)[:3])
        more = len(self._running) - 3
        if more > 0:
            running += f" +{more}"
        line = (f"[{self.counts['done']}/{self.counts['total']}] {self.counts['hits']} cached, "
                f"{self.counts['failed']} failed, {elapsed:.1f}s"
                + (f" | running: {running}" if running else ""))
        width = 120
        try:
            width = os.get_terminal_size(self.stream.fileno()).columns - 1
        except (OSError, ValueError, AttributeError):
            pass
        self.stream.write(self._paint(line[:width], "2"))
        self._status_shown = True

    # ---------------------------------------------------------------- lifecycle
    def start(self, total: int) -> None:
        self.counts["total"] = total
        self._started = time.monotonic()
        if self.live:
            self._ticker = threading.Thread(target=self._tick, daemon=True)
            self._ticker.start()

    def _tick(self) -> None:
        while not self._stop.wait(0.25):
            with self.lock:
                if self._status_shown:
                    self.stream.write("\r\033[K")
                self._draw_status()
                self.stream.flush()

    def stop(self) -> None:
        self._stop.set()
        if self._ticker:
            self._ticker.join()
        with self.lock:
            if self._status_shown:
                self.stream.write("\r\033[K")
                self._status_shown = False
                self.stream.flush()

    # ---------------------------------------------------------------- events
    def task_started(self, task_id: str, command: str, gpus: list[str] | None = None) -> None:
        """A command starts; `gpus`: the GPU ids it was granted (shown with it while it runs)."""
        with self.lock:
            self._running[task_id] = time.monotonic()
            held = ""
            if gpus:
                self._gpus[task_id] = ",".join(gpus)
                held = self._paint(f"  [GPU {self._gpus[task_id]}]", "36")
            if not self.quiet:
                self._write(self._paint(f"> {task_id}", "1") + held + self._paint(f"  $ {command}", "2") + "\n")

    def task_output(self, task_id: str, line: bytes) -> None:
        if self.quiet:
            return
        text = line.decode("utf-8", errors="replace")
        if not text.endswith("\n"):
            text += "\n"
        with self.lock:
            self._write(self._prefix(task_id) + text)

    def replay(self, task_id: str, log: bytes, origin: str) -> None:
        with self.lock:
            if not self.quiet:
                self._write(self._paint(f"> {task_id}", "1") + self._paint(f"  [{origin} cache hit, replaying "
                                                                            "output]", "32") + "\n")
                for line in log.splitlines():
                    self._write(self._prefix(task_id) + line.decode("utf-8", errors="replace") + "\n")

    def task_finished(self, task_id: str, status: str, duration: float, note: str = "") -> None:
        with self.lock:
            self._running.pop(task_id, None)
            self._gpus.pop(task_id, None)
            self.counts["done"] += 1
            if status.endswith("hit"):
                self.counts["hits"] += 1
            if status == "failed":
                self.counts["failed"] += 1
            if self.quiet and status not in ("failed",):
                return
            label = {"local-hit": "cache hit (local)", "remote-hit": "cache hit (remote)", "miss": "ran",
                     "failed": "FAILED", "skipped": "skipped"}.get(status, status)
            text = f"  {task_id}: {label}" + (f" in {duration:.2f}s" if status in ("miss", "failed") else "")
            if note:
                text += f" ({note})"
            self._write(self._paint(text, _STATUS_COLORS.get(status, "0")) + "\n")

    def warn(self, message: str) -> None:
        with self.lock:
            self._write(self._paint("warning: ", "33;1") + message + "\n")

    def error(self, message: str) -> None:
        with self.lock:
            self._write(self._paint("error: ", "31;1") + message + "\n")
