"""Regenerate docs/images/: a screenshot of `nxrun graph --html` and the `nxrun report` plots, from a
small CPU-only pipeline (its bench figures are synthetic) run four times with edits in between.
Needs Chromium and matplotlib.

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
from report.workspaces import make_pipeline, nxrun, set_params  # noqa: E402


def main() -> None:
    images = REPO / "docs" / "images"
    images.mkdir(parents=True, exist_ok=True)
    chromium = find_chromium()
    if chromium is None:
        sys.exit("Chromium not found: apt-get install -y chromium")
    with tempfile.TemporaryDirectory() as temp:
        root = make_pipeline(Path(temp) / "demo")
        for step, scale in enumerate((1.0, 1.15, 1.15, 1.1)):
            set_params(root, scale)
            if step == 3:
                (root / "src" / "gemm.cu").write_text("// kernel v2: wider tiles\n")
            nxrun(root, "run", "report:summary", env={"STEP_SLEEP": "0.5"})
        (root / "src" / "data.txt").write_text("rows, edited after the last run\n")
        page = root / "graph.html"
        nxrun(root, "graph", "--html", str(page))
        browser = Browser(chromium, Path(temp) / "profile", width=1400, height=760)
        try:
            browser.open(page.as_uri())
            x, y = browser.evaluate("(() => { const r = document.querySelector('.node[data-id=\"gemm:bench\"]')"
                                    ".getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()")
            browser.click(x, y)
            time.sleep(0.3)
            browser.screenshot(images / "graph-page.png")
        finally:
            browser.close()
        out = Path(temp) / "report"
        nxrun(root, "report", "--out", str(out))
        shutil.copy(out / "cache.png", images / "report-cache.png")
        shutil.copy(out / "bench-gemm-bench.png", images / "report-gemm-bench.png")
    for name in ("graph-page.png", "report-cache.png", "report-gemm-bench.png"):
        print(f"wrote docs/images/{name}")


if __name__ == "__main__":
    main()
