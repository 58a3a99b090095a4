"""Headless Chromium driven through the DevTools protocol over a pipe (--remote-debugging-pipe):
no websocket library and no browser download, only Debian's `chromium` package.

Commands go to the browser's fd 3 and replies come from its fd 4, each a JSON message ended by NUL.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import queue
import shutil
import subprocess
import threading
import time
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
         "--disable-default-apps", "--mute-audio", "--hide-scrollbars", "--remote-debugging-pipe"]


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


class ChromiumError(RuntimeError):
    pass


class Browser:
    """One headless browser with one page attached; `events` collects every protocol event."""

    def __init__(self, binary: str, user_data_dir: Path, width: int = 1600, height: int = 1000):
        to_browser_r, self._to_browser = (self._high(fd) for fd in os.pipe())
        self._from_browser, from_browser_w = (self._high(fd) for fd in os.pipe())
        # bash puts the pipe ends on fds 3 and 4, where --remote-debugging-pipe expects them
        script = f'exec "$0" "$@" 3<&{to_browser_r} 4>&{from_browser_w} {to_browser_r}<&- {from_browser_w}>&-'
        self.process = subprocess.Popen(
            ["bash", "-c", script, binary, *FLAGS, f"--user-data-dir={user_data_dir}",
             f"--window-size={width},{height}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open("/tmp/chromium_err.log", "wb"),
            pass_fds=(to_browser_r, from_browser_w))
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._next_id = 0
        self._replies: dict[int, queue.Queue] = {}
        self._lock = threading.Lock()
        self.events: list[dict] = []
        self._event_cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.session = None
        targets = self.call("Target.getTargets")["targetInfos"]
        page = next((t for t in targets if t["type"] == "page"), None)
        target_id = page["targetId"] if page else self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target_id, flatten=True)["sessionId"]
        for domain in ("Page.enable", "Runtime.enable", "Network.enable"):
            self.call(domain)
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

    @staticmethod
    def _high(fd: int) -> int:
        """The fd moved above 64, clear of the 3 and 4 the browser's end must become."""
        moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 64)
        os.close(fd)
        return moved

    # -------------------------------------------------------------------- protocol
    def _read(self) -> None:
        buffer = b""
        while True:
            try:
                chunk = os.read(self._from_browser, 1 << 16)
            except OSError:
                break
            if not chunk:
                break
            buffer += chunk
            while b"\0" in buffer:
                raw, buffer = buffer.split(b"\0", 1)
                message = json.loads(raw)
                if "id" in message:
                    with self._lock:
                        reply = self._replies.pop(message["id"], None)
                    if reply is not None:
                        reply.put(message)
                else:
                    with self._event_cond:
                        self.events.append(message)
                        self._event_cond.notify_all()

    def call(self, method: str, timeout: float = 60, **params) -> dict:
        with self._lock:
            self._next_id += 1
            message_id = self._next_id
            reply: queue.Queue = queue.Queue()
            self._replies[message_id] = reply
        message = {"id": message_id, "method": method, "params": params}
        if self.session and not method.startswith("Target."):
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        try:
            answer = reply.get(timeout=timeout)
        except queue.Empty:
            raise ChromiumError(f"{method}: no answer in {timeout}s") from None
        if "error" in answer:
            raise ChromiumError(f"{method}: {answer['error']}")
        return answer.get("result", {})

    def wait_event(self, method: str, timeout: float = 60, since: int = 0) -> dict:
        deadline = time.monotonic() + timeout
        with self._event_cond:
            while True:
                for event in self.events[since:]:
                    if event.get("method") == method:
                        return event
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ChromiumError(f"no {method} event in {timeout}s")
                self._event_cond.wait(left)

    # -------------------------------------------------------------------- page helpers
    def open(self, url: str, timeout: float = 60) -> float:
        """Navigate and wait for the load event; returns seconds taken."""
        mark = len(self.events)
        started = time.monotonic()
        self.call("Page.navigate", url=url)
        self.wait_event("Page.loadEventFired", timeout, since=mark)
        return time.monotonic() - started

    def evaluate(self, expression: str, timeout: float = 60):
        result = self.call("Runtime.evaluate", timeout=timeout, expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            raise ChromiumError(f"{expression[:80]}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def click(self, x: float, y: float) -> None:
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left" if kind != "mouseMoved" else "none",
                      clickCount=1 if kind != "mouseMoved" else 0)

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def requested_urls(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events if e.get("method") == "Network.requestWillBeSent"]

    def exceptions(self) -> list[dict]:
        return [e["params"] for e in self.events if e.get("method") == "Runtime.exceptionThrown"]

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=10)
        except (ChromiumError, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for fd in (self._to_browser, self._from_browser):
            try:
                os.close(fd)
            except OSError:
                pass
