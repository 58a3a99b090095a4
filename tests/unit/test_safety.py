"""nxrun.store.safety.check_entry: what a manifest must be before restore writes any of it."""

from __future__ import annotations

import json

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from nxrun.store import CacheEntry, OutputRecord, UnsafeEntry
from nxrun.store.safety import check_entry, output_roots
from nxrun.store.tiered import _check_shape

DIGEST = "0123456789abcdef0123456789abcdef"


def file(path: str, mode: int = 0o644, **changes) -> OutputRecord:
    return OutputRecord(path, "file", digest=changes.pop("digest", DIGEST), size=changes.pop("size", 3),
                        mode=mode, **changes)


def link(path: str, target) -> OutputRecord:
    return OutputRecord(path, "symlink", target=target, mode=0o777)


def folder(path: str) -> OutputRecord:
    return OutputRecord(path, "dir", mode=0o755)


def entry(*records: OutputRecord) -> CacheEntry:
    return CacheEntry("e" * 32, "p:t", list(records), ["out"], "d" * 32, None)


def refused(*records: OutputRecord, declared=("out",)) -> str:
    with pytest.raises(UnsafeEntry) as caught:
        check_entry(entry(*records), list(declared))
    assert str(caught.value).startswith("p:t: ")
    return str(caught.value)


def test_plain_entry_passes_and_lists_the_folders_it_needs():
    layout = check_entry(entry(file("out/a/b.txt"), link("out/a/l", "b.txt"), folder("out/empty")), ["out"])
    assert layout.roots == ["out"]
    assert layout.folders == {"out", "out/a", "out/empty"}
    assert set(layout.records) == {"out/a/b.txt", "out/a/l", "out/empty"}
    assert layout.climbing_links == []


@pytest.mark.parametrize("path", ["/etc/passwd", "out/../x", "out/./x", "out//x", "out/x/", "", "out\\x",
                                  "out/\0x", "..", "."])
def test_path_that_is_not_plain_and_relative_is_refused(path):
    assert repr(path) in refused(file(path))


def test_path_outside_the_declared_outputs_is_refused():
    assert "not under the task's declared outputs" in refused(file("src/main.c"))
    assert "not under" in refused(file("outer/x"))      # a name that only starts like a declared output


def test_two_records_at_one_path_are_refused_file_and_folder_too():
    assert "appears twice" in refused(file("out/x"), file("out/x"))
    assert "as file and dir" in refused(file("out/x"), folder("out/x"))


@pytest.mark.parametrize("order", ["leaf first", "leaf last"])
def test_record_beneath_a_file_or_link_of_the_same_entry_is_refused(order):
    for parent in (file("out/p"), link("out/p", "q")):
        records = [parent, file("out/p/deep/x")]
        if order == "leaf last":
            records.reverse()
        assert "lies beneath 'out/p'" in refused(*records)


def test_record_beneath_a_declared_output_that_is_a_file_record_is_refused():
    assert "lies beneath 'out'" in refused(file("out"), file("out/x"))


def test_the_issues_chain_of_links_climbing_out_is_refused():
    chain = [link("out/l0", ".."), link("out/l1", "l0/.."), link("out/l2", "l1/..")]
    assert "leads out of" in refused(*chain)
    assert "leads out of" in refused(*reversed(chain))
    assert "lies beneath" in refused(*chain, file("out/l2/x"))


@pytest.mark.parametrize("target", ["../src/main.c", "../nxrun.toml", "../.git/hooks/pre-commit", "..", "../..",
                                    "sub/../../x", "../../../outside", "../out2/x"])
def test_link_leaving_the_declared_outputs_is_refused_even_inside_the_workspace(target):
    assert "leads out of" in refused(link("out/l", target))


@pytest.mark.parametrize("target", ["/etc/passwd", "", "a\0b", 7, None])
def test_absolute_empty_or_malformed_link_target_is_refused(target):
    assert "absolute, empty or malformed" in refused(link("out/l", target))


def test_link_is_followed_through_the_entrys_other_links_whatever_their_order():
    # each link alone stays inside 'out' when read as text; through out/x/a, out/b climbs out
    for records in ([link("out/x/a", ".."), link("out/b", "x/a/../..")],
                    [link("out/b", "x/a/../.."), link("out/x/a", "..")]):
        assert "'out/b'" in refused(*records)
    # and one that reads as leaving 'out' but lands inside it through another link is accepted
    check_entry(entry(link("out/b", "a/../../x"), link("out/a", "sub/deeper")), ["out"])
    assert "'out/b'" in refused(link("out/b", "a/../../x"))


def test_loop_of_links_is_refused():
    assert "loop" in refused(link("out/a", "b/x"), link("out/b", "a/y"))


def test_link_through_a_file_is_refused():
    assert "passes through the file 'out/f'" in refused(file("out/f"), link("out/l", "f/../x"))


def test_links_inside_the_outputs_are_allowed_dangling_ones_too():
    layout = check_entry(entry(file("out/lib/libx.so.1"), link("out/lib/libx.so", "libx.so.1"),
                               link("out/up", "lib/../lib"), link("out/dangling", "missing/x"),
                               link("out/self", ".")), ["out"])
    assert layout.climbing_links == []


def test_link_into_a_sibling_declared_output_is_allowed_and_noted_as_climbing():
    layout = check_entry(entry(link("out/a/l", "../b/x"), file("out/b/x")), ["out/a", "out/b"])
    assert layout.climbing_links == ["out/a/l"]
    with pytest.raises(UnsafeEntry, match="leads out of"):
        check_entry(entry(link("out/a/l", "../c/x")), ["out/a", "out/b"])


@pytest.mark.parametrize("mode", [0o4755, 0o2755, 0o1777, 0o100644, -1, True, "644"])
def test_special_or_malformed_modes_are_refused(mode):
    assert "mode" in refused(file("out/x", mode=mode))


@pytest.mark.parametrize("changes", [{"digest": "zz"}, {"digest": None}, {"size": -1}, {"size": "3"},
                                     {"size": True}])
def test_malformed_file_fields_are_refused(changes):
    refused(file("out/x", **changes))


def test_unknown_kind_and_non_records_are_refused():
    assert "unknown kind" in refused(OutputRecord("out/x", "fifo"))
    assert "unknown kind" in refused(OutputRecord("out/x", ["file"]))
    with pytest.raises(UnsafeEntry):
        check_entry(CacheEntry("e" * 32, "p:t", [{"path": "out/x"}], ["out"], "", None), ["out"])


@pytest.mark.parametrize("declared", [["../out"], ["/abs"], ["out/./x"], [""], "out", [3]])
def test_malformed_declared_outputs_are_refused(declared):
    with pytest.raises(UnsafeEntry, match="declared outputs"):
        check_entry(entry(file("out/x")), declared)


def test_nested_declared_outputs_are_one_root():
    assert output_roots(["out/a", "out", "b", "out/a/c", "out2"]) == ["b", "out", "out2"]
    layout = check_entry(entry(file("out/a/x"), link("out/a/l", "../y")), ["out/a", "out"])
    assert layout.roots == ["out"] and layout.climbing_links == []


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                     max_leaves=8)


def _mostly(*values):
    return st.one_of(st.sampled_from(values), st.sampled_from(values), _JSON)


_RECORD = st.fixed_dictionaries(
    {"path": _mostly("out/x", "out/y/z", "out"), "kind": _mostly("file", "symlink", "dir")},
    optional={"digest": _mostly(DIGEST), "size": _mostly(3, 0), "mode": _mostly(0o644, 0o755, 0o777),
              "target": _mostly("x", "../x", "y/z"), "extra": _JSON})


@settings(max_examples=300, deadline=None)
@example(records=[{"path": "out/x", "kind": "symlink", "target": 5}], declared=["out"], task_id="p:t")
@example(records=[{"path": "out/x", "kind": ["file"]}], declared=["out"], task_id="p:t")
@given(records=st.one_of(_JSON, st.lists(st.one_of(_RECORD, _RECORD, _JSON), max_size=4)),
       declared=_mostly(["out"], ["out", "out/x"], [".."]), task_id=_mostly("p:t"))
def test_any_remote_manifest_fails_only_with_the_errors_a_remote_read_catches(records, declared, task_id):
    manifest = {"format": 1, "etag": "e" * 32, "task_id": task_id, "outputs": records, "declared_outputs": declared,
                "outputs_digest": "d" * 32, "log_digest": None}
    try:
        parsed = CacheEntry.from_json(json.dumps(manifest))
        _check_shape(parsed)
        check_entry(parsed, parsed.declared_outputs)
    except (ValueError, TypeError, KeyError, UnsafeEntry):   # what RemoteCache._validate turns into a miss
        pass


@pytest.mark.parametrize("record", [
    file("out/" + "n" * 256), file("out/d/" + "é" * 128), link("out/" + "n" * 256, "x"),
    file("out/" + "/".join(["d" * 200] * 21)), link("out/l", "x/" * 2048), link("out/l", "é" * 2048),
    file("out/\ud800"), file("out/\udcff"), link("out/l", "\udc80x"), file("out/é\u0301\ud83d"),
], ids=["long name", "long name in bytes", "long link name", "long path", "long target", "long target in bytes",
        "surrogate", "escaped byte", "escaped byte in target", "trailing surrogate"])
def test_name_path_or_target_the_file_system_cannot_take_is_refused_before_anything_is_written(record):
    assert "too long" in refused(record) or "not valid UTF-8" in refused(record)


def test_link_resolution_work_is_bounded():
    import time
    # each link's target walks through the one before it, and none of its parts undoes the last
    records = [link(f"out/l{i}", (f"l{i - 1}/" if i else "") + "x/.." * 1000) for i in range(40)]
    started = time.monotonic()
    message = refused(*records)
    assert "too long" in message or "too many" in message
    assert time.monotonic() - started < 2
