"""Regenerate docs/images/: a screenshot of `nxrun graph --html` and the `nxrun report` cache plot,
from the CPU example pipeline (examples/pipeline) run three times with edits in between.
Needs Chromium and matplotlib. Benchmark trend plots come from real bench runs only (see
workloads/gpu_check.sh, which writes them on the GPU machine).

    python docs/make_images.py        (or docs/make_images.sh)
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from report.chromium import Browser, find_chromium  # noqa: E402
from report.workspaces import nxrun  # noqa: E402


def main() -> None:
    images = REPO / "docs" / "images"
    images.mkdir(parents=True, exist_ok=True)
    chromium = find_chromium()
    if chromium is None:
        sys.exit("Chromium not found: apt-get install -y chromium")
    with tempfile.TemporaryDirectory() as temp:
        root = Path(temp) / "pipeline"
        shutil.copytree(REPO / "examples" / "pipeline", root, ignore=shutil.ignore_patterns(".nxrun", "build"))
        raw = root / "data" / "raw.txt"
        nxrun(root, "run", "report:summary")
        nxrun(root, "run", "report:summary")
        raw.write_text(raw.read_text() + "one more line for the counters\n")
        nxrun(root, "run", "report:summary")
        raw.write_text(raw.read_text().replace("lazy", "sleepy"))
        page = root / "graph.html"
        nxrun(root, "graph", "--html", str(page))
        browser = Browser(chromium, Path(temp) / "profile", width=1400, height=760)
        try:
            browser.open(page.as_uri())
            x, y = browser.evaluate("(() => { const r = document.querySelector('.node[data-id=\"stats:count[unit=words]\"]')"
                                    ".getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()")
            browser.click(x, y)
            time.sleep(0.3)
            browser.screenshot(images / "graph-page.png")
        finally:
            browser.close()
        out = Path(temp) / "report"
        nxrun(root, "report", "--out", str(out))
        shutil.copy(out / "cache.png", images / "report-cache.png")
    for name in ("graph-page.png", "report-cache.png"):
        print(f"wrote docs/images/{name}")


if __name__ == "__main__":
    main()
