"""Listing inputs is linear in the workspace's size: a walk filters declared outputs with a set
lookup per path, not a pass over every output, and a folder whose parent was walked already is
found and sliced out of the parent's list without a pass over every walked folder or file.

The workspace is a monorepo of n packages (pN/nxrun.toml, pN/src/in.txt, pN/dist/out.txt with
pN/dist declared an output). Operations are counted, not timed: every Python and builtin call made
while listing (sys.setprofile), so the test is exact on a loaded machine. Doubling n must at most
about double the count; a scan of every output per path, or of every walked folder per folder,
quadruples it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from nxrun.hashing import FileIndex


def monorepo(root: Path, n: int) -> None:
    for i in range(n):
        (root / f"p{i}" / "src").mkdir(parents=True)
        (root / f"p{i}" / "dist").mkdir()
        (root / f"p{i}" / "nxrun.toml").write_text("")
        (root / f"p{i}" / "src" / "in.txt").write_text("")
        (root / f"p{i}" / "dist" / "out.txt").write_text("")


def counted_calls(action: Callable[[], object]) -> tuple[int, object]:
    calls = 0

    def profile(frame, event, arg) -> None:
        nonlocal calls
        if event in ("call", "c_call"):
            calls += 1

    sys.setprofile(profile)
    try:
        result = action()
    finally:
        sys.setprofile(None)
    return calls, result


def every_project(index: FileIndex, n: int) -> list[list[str]]:
    return [index.expand([f"p{i}/**/*"])[0] for i in range(n)]


def root_then_every_project(index: FileIndex, n: int) -> list[list[str]]:
    return [index.expand(["**/*"])[0]] + every_project(index, n)


SCENARIOS = {
    "one walk of the root, outputs filtered": (True, lambda index, n: index.expand(["**/*"])[0]),
    "a walk per project, outputs filtered": (True, every_project),
    "a walk per project": (False, every_project),
    "the root walked first, then every project": (False, root_then_every_project),
}


def listing_cost(tmp_path: Path, n: int, with_outputs: bool, action) -> tuple[int, object]:
    root = tmp_path / f"ws{n}"
    monorepo(root, n)
    index = FileIndex(root)
    if with_outputs:
        index.set_excluded_outputs(f"p{i}/dist" for i in range(n))
    return counted_calls(lambda: action(index, n))


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_listing_inputs_grows_linearly(tmp_path: Path, name: str) -> None:
    with_outputs, action = SCENARIOS[name]
    small, result = listing_cost(tmp_path, 300, with_outputs, action)
    large, _ = listing_cost(tmp_path, 600, with_outputs, action)
    assert result, "the listing found nothing"
    # linear: about 2x; a pass over every output per path, or over every walked folder: about 4x
    assert large <= 2.5 * small, (f"{name}: {small} calls at 300 packages, {large} at 600 "
                                  f"({large / small:.2f}x): quadratic in the number of packages")


def test_outputs_and_folders_below_them_are_left_out(tmp_path: Path) -> None:
    monorepo(tmp_path, 3)
    (tmp_path / "p1" / "dist" / "deep").mkdir()
    (tmp_path / "p1" / "dist" / "deep" / "x.txt").write_text("")
    (tmp_path / "p2" / "src" / "gen.txt").write_text("")
    index = FileIndex(tmp_path, excluded=[".nxrun"])
    index.set_excluded_outputs(["p0/dist", "p1/dist", "p2/src/gen.txt"])
    assert index.expand(["**/*"])[0] == ["p0/nxrun.toml", "p0/src/in.txt", "p1/nxrun.toml", "p1/src/in.txt",
                                          "p2/dist/out.txt", "p2/nxrun.toml", "p2/src/in.txt"]
    # a pattern whose folder lies inside an output finds nothing there
    assert FileIndex(tmp_path).expand(["p0/**/*"])[0] == ["p0/dist/out.txt", "p0/nxrun.toml", "p0/src/in.txt"]
    inside = FileIndex(tmp_path)
    inside.set_excluded_outputs(["p1/dist"])
    assert inside.expand(["p1/dist/deep/**/*"]) == ([], ["p1/dist/deep/**/*"])
    assert inside.is_output("p1/dist") and inside.is_output("p1/dist/deep/x.txt")
    assert not inside.is_output("p1/distant") and not inside.is_output("p1")


def test_a_folder_is_sliced_from_a_walked_parent(tmp_path: Path) -> None:
    monorepo(tmp_path, 12)     # p1, p10, p11: neighbours in sorted order
    (tmp_path / "p1.txt").write_text("")
    index = FileIndex(tmp_path)
    everything = index.expand(["**/*"])[0]
    assert index.files_under("p1") == ["p1/dist/out.txt", "p1/nxrun.toml", "p1/src/in.txt"]
    assert index.files_under("p1/src") == ["p1/src/in.txt"]
    assert index.files_under("p11/dist") == ["p11/dist/out.txt"]
    assert index.files_under("p1/missing") == []
    fresh = FileIndex(tmp_path)
    assert [f for f in everything if f.startswith("p1/")] == fresh.files_under("p1")


def test_project_globs_share_one_compiled_pattern(tmp_path: Path) -> None:
    """A default input `**/*` becomes one pattern per project (`p17/**/*`); compiling each one
    costs more than the rest of a no-op's work for the task."""
    from nxrun.hashing import compile_glob

    def compiled(n: int) -> int:
        root = tmp_path / f"ws{n}"
        monorepo(root, n)
        index = FileIndex(root)
        compile_glob.cache_clear()
        assert all(every_project(index, n))
        return compile_glob.cache_info().misses

    assert compiled(40) == compiled(80) <= 2


@pytest.mark.parametrize("pattern", ["**/*", "p1/**/*", "p1/src/*.txt", "p1/*/in.txt", "p1*/**/*.txt", "p1?/**",
                                     "p[12]/src/**/*", "p1/src/in.txt/**", "*/dist/*", "p1/**", "p10/**/out*"])
def test_a_glob_matches_what_its_whole_regex_matches(tmp_path: Path, pattern: str) -> None:
    from nxrun.hashing import compile_glob, literal_prefix

    monorepo(tmp_path, 12)
    (tmp_path / "p1" / "src" / "deep" / "er").mkdir(parents=True)
    (tmp_path / "p1" / "src" / "deep" / "er" / "x.txt").write_text("")
    index = FileIndex(tmp_path)
    whole = compile_glob(pattern)
    expected = sorted(f for f in index.files_under(literal_prefix(pattern)) if whole.match(f))
    assert FileIndex(tmp_path).expand([pattern])[0] == expected
    assert expected or pattern == "p1/src/in.txt/**"
