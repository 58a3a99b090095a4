"""A damaged index.db (garbage, cut short, one bad page) never stops a command: it is moved aside
to index.db.corrupt-<time> with one warning, a new index keeps what could be read, blobs stay, and
the next run restores correct outputs. `cache verify` checks the index too."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli_workspace import Workspace

TASKS = 40
PAGE = 4096


def _config(slow: bool = False) -> str:
    lines = ["[workspace]\nparallel = 4\n"]
    for i in range(TASKS):
        lines.append(f'[projects.p.targets.t{i}]\ncommand = "mkdir -p out && echo {i} > out/t{i}.txt"\n'
                     f'inputs = ["src.txt"]\noutputs = ["out/t{i}.txt"]\n')
    lines.append("[projects.p.targets.all]\ndepends-on = [" + ", ".join(f'"t{i}"' for i in range(TASKS)) + "]\n")
    if slow:
        lines.append('[projects.p.targets.slow]\ncommand = "sleep 4 && echo slow > slow.txt"\ninputs = []\n'
                     'outputs = ["slow.txt"]\ncache = "never"\n')
    return "\n".join(lines)


@pytest.fixture
def cached(ws: Workspace) -> Workspace:
    ws.write("nxrun.toml", _config())
    ws.write("src.txt", "v1\n")
    summary = ws.run_json("p:all")
    assert set(ws.statuses(summary).values()) == {"miss"}
    return ws


def _index(ws: Workspace) -> Path:
    return ws.root / ".nxrun" / "index.db"


def _pages_of(index: Path, table: str) -> list[int]:
    """The leaf pages of a table (none where SQLite was built without the dbstat table)."""
    conn = sqlite3.connect(index)
    try:
        return [row[0] for row in conn.execute(
            "SELECT pageno FROM dbstat WHERE name = ? AND pagetype = 'leaf' ORDER BY pageno", (table,))]
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def _entries_leaf_page(index: Path) -> int:
    """A leaf page of the entries table from the middle of its pages (the middle page of the file
    where SQLite was built without the dbstat table)."""
    pages = _pages_of(index, "entries")
    if len(pages) >= 3:
        return pages[len(pages) // 2]
    return os.path.getsize(index) // PAGE // 2 + 1


def _damage(index: Path, how: str) -> None:
    size = os.path.getsize(index)
    wal = Path(f"{index}-wal")
    assert size > 8 * PAGE and (not wal.exists() or wal.stat().st_size == 0), "the index is not all in index.db"
    if how == "garbage":
        index.write_bytes(os.urandom(size))
    elif how == "cut-mid-page":
        os.truncate(index, (size // PAGE // 2) * PAGE + PAGE // 3)
    elif how == "bad-page":
        page = _entries_leaf_page(index)
        with open(index, "r+b") as handle:
            handle.seek((page - 1) * PAGE)
            handle.write(os.urandom(PAGE))
    else:
        raise AssertionError(how)


def _damage_lines(result) -> list[str]:
    return [line for line in (result.stdout + result.stderr).splitlines() if "index" in line and "damaged" in line]


def _assert_clean(result) -> None:
    text = result.stdout + result.stderr
    assert "Traceback" not in text and "sqlite3." not in text, text


def _assert_runs_correctly(ws: Workspace, damage_unseen: bool = False) -> None:
    """From scratch, the run restores or re-makes every output; then everything is cached and
    the index is sound. `damage_unseen`: the damage may still be there, for this run to meet."""
    for path in (ws.root / "out").glob("*.txt"):
        path.unlink()
    summary = ws.run_json("p:all")
    assert all((ws.root / f"out/t{i}.txt").read_text() == f"{i}\n" for i in range(TASKS))
    damage = [w for w in summary["warnings"] if "damaged" in w]
    assert len(damage) <= damage_unseen and len(summary["warnings"]) == len(damage), summary["warnings"]
    assert set(ws.statuses(ws.run_json("p:all")).values()) == {"local-hit"}
    verify = ws.nxrun("cache", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr


COMMANDS = {
    "run": (("run", "p:all"), 0),
    "verify": (("cache", "verify"), 1),
    "clear": (("cache", "clear", "-y"), 0),
    "stats": (("cache", "stats"), 0),
    "history": (("history",), 0),
}


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("how", ["garbage", "cut-mid-page"])
def test_every_command_works_on_an_unreadable_index(cached: Workspace, how: str, command: str):
    _damage(_index(cached), how)
    args, expected_rc = COMMANDS[command]
    result = cached.nxrun(*args)
    _assert_clean(result)
    assert result.returncode == expected_rc, result.stdout + result.stderr
    lines = _damage_lines(result)
    assert len(lines) == 1, result.stdout + result.stderr
    moved = list((cached.root / ".nxrun").glob("index.db.corrupt-*"))
    assert [p for p in moved if p.name in lines[0]], (lines, moved)
    assert str(_index(cached)) in lines[0]
    if command == "run":
        assert all((cached.root / f"out/t{i}.txt").read_text() == f"{i}\n" for i in range(TASKS))
    _assert_runs_correctly(cached)


def test_a_cut_index_keeps_what_was_written_before_the_cut(cached: Workspace):
    """A file cut short (a disk that filled up, a bad copy) loses only the pages past the cut: cut
    inside the page after the entries' last page, every entry comes back."""
    index = _index(cached)
    pages = _pages_of(index, "entries")
    if not pages:
        pytest.skip("this SQLite has no dbstat table to find the entries' pages")
    assert (max(pages) + 1) * PAGE < os.path.getsize(index)
    os.truncate(index, max(pages) * PAGE + PAGE // 3)
    summary = cached.run_json("p:all")
    statuses = cached.statuses(summary)
    assert set(statuses.values()) == {"local-hit"}, statuses
    assert len([w for w in summary["warnings"] if "damaged" in w]) == 1


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_works_on_an_index_with_one_bad_page(cached: Workspace, command: str):
    _damage(_index(cached), "bad-page")
    args, expected_rc = COMMANDS[command]
    result = cached.nxrun(*args)
    _assert_clean(result)
    # a command that never reads the bad page does not notice it (and need not); verify always does
    assert result.returncode in ((0, 1) if command == "verify" else (0,)), result.stdout + result.stderr
    assert len(_damage_lines(result)) <= (2 if command == "verify" else 1), result.stdout + result.stderr
    if command == "verify":
        assert result.returncode == 1 and "damaged" in result.stdout
    _assert_runs_correctly(cached, damage_unseen=not _damage_lines(result))


def test_a_bad_page_costs_only_the_entries_on_it(cached: Workspace):
    _damage(_index(cached), "bad-page")
    summary = cached.run_json("p:all")
    statuses = cached.statuses(summary)
    assert list(statuses.values()).count("local-hit") >= TASKS // 2, statuses
    assert "miss" in statuses.values(), statuses
    assert len([w for w in summary["warnings"] if "damaged" in w]) == 1
    assert all((cached.root / f"out/t{i}.txt").read_text() == f"{i}\n" for i in range(TASKS))


def test_verify_reports_a_sound_index(cached: Workspace):
    result = cached.nxrun("cache", "verify")
    assert result.returncode == 0
    assert "index is sound" in result.stdout


def test_an_index_damaged_while_another_run_has_it_open_is_left_to_the_next_run(ws: Workspace):
    """Moving the index aside while another process has it open could let that process delete the
    new index's -wal when it closes: a run that finds the index damaged and in use goes on
    uncached instead, and the next run on its own rebuilds it."""
    ws.write("nxrun.toml", _config(slow=True))
    ws.write("src.txt", "v1\n")
    ws.run_json("p:all")
    env = dict(os.environ, NO_COLOR="1")
    slow = subprocess.Popen([sys.executable, "-m", "nxrun", "run", "p:slow"], cwd=ws.root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while not _holds_index(slow.pid, _index(ws)):
            assert time.monotonic() < deadline and slow.poll() is None, "the slow run never opened the index"
            time.sleep(0.02)
        _damage(_index(ws), "bad-page")
        for path in (ws.root / "out").glob("*.txt"):
            path.unlink()
        summary = ws.run_json("p:all")
        assert all((ws.root / f"out/t{i}.txt").read_text() == f"{i}\n" for i in range(TASKS))
        warnings = [w for w in summary["warnings"] if "damaged" in w]
        assert len(warnings) == 1 and "other nxrun processes have it open" in warnings[0], summary["warnings"]
        assert not list((ws.root / ".nxrun").glob("index.db.corrupt-*"))
    finally:
        output, _ = slow.communicate(timeout=60)
    assert slow.returncode == 0 and "Traceback" not in output, output
    result = ws.nxrun("run", "p:all")      # alone now: it rebuilds the index
    _assert_clean(result)
    assert len(_damage_lines(result)) == 1 and len(list((ws.root / ".nxrun").glob("index.db.corrupt-*"))) == 1
    _assert_runs_correctly(ws)


def _holds_index(pid: int, index: Path) -> bool:
    """Whether process `pid` has the index open (its connection is up)."""
    try:
        return any(os.path.realpath(os.path.join(f"/proc/{pid}/fd", fd)) == str(index)
                   for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return False


def test_verify_finds_damage_no_command_had_read(cached: Workspace):
    """A bad page that nothing has read yet: `cache verify` finds it (integrity_check), moves the
    index aside and says so; the --json stats afterwards are those of the rebuilt index."""
    _damage(_index(cached), "bad-page")
    result = cached.nxrun("cache", "verify")
    _assert_clean(result)
    assert result.returncode == 1 and "damaged" in result.stdout
    assert list((cached.root / ".nxrun").glob("index.db.corrupt-*"))
    stats = json.loads(cached.nxrun("cache", "stats", "--json", check=True).stdout)
    assert 0 < stats["entries"] < TASKS


def _replace_index(index: Path, how: str) -> None:
    """Put something that is not an index file where index.db belongs."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{index}{suffix}").unlink(missing_ok=True)
    if how == "folder":
        index.mkdir()
        (index / "stray.txt").write_text("not an index\n")
    elif how == "dangling-link":
        index.symlink_to(index.parent / "gone" / "index.db")
    elif how == "link-to-folder":
        (index.parent / "elsewhere").mkdir()
        index.symlink_to("elsewhere")
    else:
        raise AssertionError(how)


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("how", ["folder", "dangling-link", "link-to-folder"])
def test_every_command_works_when_the_index_is_not_a_file(cached: Workspace, how: str, command: str):
    index = _index(cached)
    _replace_index(index, how)
    args, expected_rc = COMMANDS[command]
    result = cached.nxrun(*args)
    _assert_clean(result)
    assert result.returncode == expected_rc, result.stdout + result.stderr
    text = result.stdout + result.stderr
    assert "space" not in text, text          # not a full disk: nothing to free
    lines = _damage_lines(result)
    assert len(lines) == 1, text
    assert [p for p in index.parent.glob("index.db.corrupt-*") if p.name in lines[0]], lines
    assert index.is_file() and not index.is_symlink()
    assert not (index.parent / "gone").exists()   # a dangling link was never followed to make its target
    _assert_runs_correctly(cached)
