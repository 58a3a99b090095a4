"""The graph page: its data (no browser), and the page itself in headless Chromium: every task drawn,
a click shows the ETag components, no request leaves the file, and it stays quick at 2,000 tasks."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from require import missing

from .chromium import Browser, find_chromium
from .workspaces import PIPELINE_TASKS, make_large, nxrun

CHROMIUM = find_chromium()

SCREENSHOT_DIR = Path(__file__).parent / "artifacts"


def _page_json(html: str) -> dict:
    start = html.index("const DATA = ") + len("const DATA = ")
    end = html.index(";\nconst STATUS")
    return json.loads(html[start:end].replace("<\\/", "</"))


@pytest.fixture(scope="module")
def page(history_workspace):
    root, _ = history_workspace
    path = root / "graph.html"
    nxrun(root, "graph", "--html", str(path))
    return root, path


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if CHROMIUM is None:    # a skip here; a failure under NXRUN_REQUIRE_CHROMIUM=1 (CI)
        missing("CHROMIUM", "Chromium not found on PATH: install Debian's `chromium` package "
                            "(apt-get install -y chromium) to run the graph page tests")
    instance = Browser(CHROMIUM, tmp_path_factory.mktemp("chromium-profile"))
    yield instance
    instance.close()


def test_page_data_statuses_changes_and_bench(page):
    root, path = page
    html = path.read_text()
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in html
    data = _page_json(html)
    tasks = {t["id"]: t for t in data["tasks"]}
    graph = json.loads(nxrun(root, "graph", "--format", "json").stdout)
    assert list(tasks) == [t["id"] for t in graph["tasks"]]
    # the last run (params changed): two restored, three ran
    assert {i: t["status"] for i, t in tasks.items()} == {
        "data:prepare": "local-hit", "gemm:build": "local-hit", "gemm:bench": "miss", "paged:bench": "miss",
        "report:summary": "miss"}
    bench = tasks["gemm:bench"]
    assert bench["changes"] == [["file:src/params.json", "changed"]]
    history = json.loads(nxrun(root, "history", "gemm:bench", "--json").stdout)
    assert bench["last"]["etag"] == history[0]["etag"] and bench["previous"]["etag"] == history[1]["etag"]
    assert set(bench["components"]) >= {"command", "file:scripts/bench.py", "file:src/params.json",
                                        "dep:gemm:build", "dep:data:prepare"}
    assert bench["bench"]["metric"] == "tflops" and bench["bench"]["values"]["10_autotuned"] == pytest.approx(27.0)
    assert bench["bench"]["device"] == "cpu (H200)"
    # the kernel edit on disk: gemm:build would run; nxrun why says the same
    build = tasks["gemm:build"]
    assert build["current"]["etag"] != build["last"]["etag"] and not build["current"]["cached"]
    assert build["current"]["changes"] == [["file:src/gemm.cu", "changed"]]
    why = json.loads(nxrun(root, "why", "gemm:build", "--json").stdout)
    assert [[c["component"], c["change"]] for c in why["changes"]] == build["current"]["changes"]
    assert why["etag"] == build["current"]["etag"]


def test_page_in_chromium_draws_every_task_and_click_shows_components(page, browser):
    root, path = page
    url = path.resolve().as_uri()
    browser.open(url)
    assert browser.evaluate("document.body.dataset.ready") == "1"
    drawn = browser.evaluate("[...document.querySelectorAll('#nodes .node')].map(n => n.dataset.id)")
    assert sorted(drawn) == sorted(PIPELINE_TASKS)
    assert browser.evaluate("document.querySelectorAll('#edges .edge').length") == 5
    statuses = browser.evaluate("Object.fromEntries([...document.querySelectorAll('.node')].map(n => "
                                "[n.dataset.id, n.getAttribute('class')]))")
    assert "st-local-hit" in statuses["gemm:build"] and "st-miss" in statuses["gemm:bench"]

    # a real mouse click in the middle of the node
    x, y = browser.evaluate("(() => { const r = document.querySelector('.node[data-id=\"gemm:bench\"]')"
                            ".getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()")
    browser.click(x, y)
    assert browser.evaluate("document.getElementById('detail-id').textContent") == "gemm:bench"
    components = browser.evaluate("[...document.querySelectorAll('#components .component')].map(r => "
                                  "[r.dataset.name, r.classList.contains('changed')])")
    history = json.loads(nxrun(root, "history", "gemm:bench", "--json").stdout)
    shown = dict(components)
    assert "file:src/params.json" in shown and shown["file:src/params.json"] is True
    assert "dep:gemm:build" in shown and shown["command"] is False
    details = browser.evaluate("document.getElementById('details').innerText")
    assert history[0]["etag"] in details
    assert "python3 scripts/bench.py gemm src/params.json results/gemm" in details
    assert "10_autotuned" in details and "results/gemm" in details
    # ancestors and descendants highlighted, the rest dimmed
    classes = browser.evaluate("Object.fromEntries([...document.querySelectorAll('.node')].map(n => "
                               "[n.dataset.id, [...n.classList]]))")
    assert "ancestor" in classes["gemm:build"] and "descendant" in classes["report:summary"]
    assert "dim" in classes["paged:bench"]

    SCREENSHOT_DIR.mkdir(exist_ok=True)
    shot = browser.screenshot(SCREENSHOT_DIR / "graph-page.png")
    assert shot.read_bytes()[:4] == b"\x89PNG" and shot.stat().st_size > 10_000

    # filters: status, then project too; Escape clears the selection
    browser.evaluate("window.dispatchEvent(new KeyboardEvent('keydown', {key: 'Escape'}))")
    assert browser.evaluate("document.querySelectorAll('.node.selected, .node.dim').length") == 0
    browser.evaluate("(() => { const s = document.getElementById('filter-status'); s.value = 'local-hit'; "
                     "s.dispatchEvent(new Event('change')); })()")
    undimmed = browser.evaluate("[...document.querySelectorAll('.node:not(.dim)')].map(n => n.dataset.id)")
    assert sorted(undimmed) == ["data:prepare", "gemm:build"]
    browser.evaluate("(() => { const s = document.getElementById('filter-project'); s.value = 'gemm'; "
                     "s.dispatchEvent(new Event('change')); })()")
    undimmed = browser.evaluate("[...document.querySelectorAll('.node:not(.dim)')].map(n => n.dataset.id)")
    assert undimmed == ["gemm:build"]

    assert browser.exceptions() == []
    requests = browser.requested_urls()
    assert requests and all(u == url or u.startswith("data:") for u in requests), requests


def test_affected_highlights_what_a_change_touches(tmp_path, browser):
    from .workspaces import make_pipeline

    root = make_pipeline(tmp_path / "ws")
    git = ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    (root / ".gitignore").write_text("build/\nresults/\n*.html\n")
    subprocess.run(git + ["init", "-q", "-b", "main"], check=True)
    subprocess.run(git + ["add", "-A"], check=True)
    subprocess.run(git + ["commit", "-qm", "base"], check=True)
    nxrun(root, "run", "report:summary")
    (root / "src" / "gemm.cu").write_text("// edited\n")
    expected = json.loads(nxrun(root, "affected", "--base", "main", "--list", "--json").stdout)["affected"]
    assert sorted(expected) == ["gemm:bench", "gemm:build", "report:summary"]
    path = root / "affected.html"
    nxrun(root, "graph", "--html", str(path), "--affected", "main")
    browser.open(path.resolve().as_uri())
    highlighted = browser.evaluate("[...document.querySelectorAll('.node.affected')].map(n => n.dataset.id)")
    assert sorted(highlighted) == sorted(expected)
    banner = browser.evaluate("document.getElementById('affected-banner').textContent")
    assert banner == "3 task(s) affected by 1 changed file(s) since main: src/gemm.cu", banner
    assert browser.exceptions() == []


@pytest.mark.slow
def test_page_at_2000_tasks_renders_and_responds(tmp_path, browser):
    root = make_large(tmp_path / "big", projects=40, per_project=50)
    nxrun(root, "run-many", "-t", "bench", "--parallel", "8", "-q")
    path = root / "graph.html"
    nxrun(root, "graph", "--html", str(path))
    started = time.monotonic()
    browser.open(path.resolve().as_uri())
    assert browser.evaluate("document.querySelectorAll('#nodes .node').length") == 2000
    browser.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    load_s = time.monotonic() - started
    assert load_s < 10, f"the page took {load_s:.1f}s to draw 2,000 tasks"
    select_ms = browser.evaluate("(() => { const t0 = performance.now(); window.nxrunGraph.select('p20:t025'); "
                                 "return new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => "
                                 "r(performance.now() - t0)))); })()")
    assert select_ms < 2000
    assert browser.evaluate("document.getElementById('detail-id').textContent") == "p20:t025"
    assert browser.evaluate("document.querySelectorAll('#components .component').length") > 0
    assert browser.exceptions() == []


def test_page_marks_failed_skipped_and_never_run(tmp_path):
    from .workspaces import make_pipeline

    root = make_pipeline(tmp_path / "ws")
    with (root / "nxrun.toml").open("a") as config:
        config.write('\n[projects.broken.targets.fail]\ncommand = "exit 3"\ninputs = []\n'
                     '[projects.broken.targets.after]\ncommand = "echo after"\ndepends-on = ["fail"]\ninputs = []\n')
    assert nxrun(root, "run", "broken:after", check=False).returncode == 1
    path = root / "graph.html"
    nxrun(root, "graph", "--html", str(path))
    tasks = {t["id"]: t for t in _page_json(path.read_text())["tasks"]}
    assert tasks["broken:fail"]["status"] == "failed" and tasks["broken:fail"]["last"]["error"] == "exit code 3"
    assert tasks["broken:after"]["status"] == "skipped"
    assert tasks["gemm:bench"]["status"] == "never" and "last" not in tasks["gemm:bench"]
    assert "file:src/params.json" in tasks["gemm:bench"]["components"]  # current components, never run
