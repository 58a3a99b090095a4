"""nxrun.records: the record classes the run path uses instead of dataclasses."""

from __future__ import annotations

import pytest

from nxrun.records import as_dict, default_factory, field_names, record


@record
class Inner:
    name: str
    size: int = 0


@record
class Outer:
    id: str
    inner: list[Inner] = default_factory(list)
    tags: dict[str, str] = default_factory(dict)
    note: str = ""

    @property
    def count(self) -> int:
        return len(self.inner)


def test_fields_defaults_and_fresh_factories():
    a = Outer("a")
    b = Outer("b", note="x")
    a.inner.append(Inner("f", size=3))
    assert (a.id, a.note, a.count, b.count, b.note) == ("a", "", 1, 0, "x")
    assert a.tags is not b.tags and a.inner is not b.inner
    assert field_names(Outer) == ("id", "inner", "tags", "note")
    with pytest.raises(TypeError):
        Outer()  # the field without a default is required
    with pytest.raises(TypeError):
        Inner("n", 1, 2)


def test_as_dict_recurses_through_records_and_containers():
    outer = Outer("a", [Inner("f", 3), Inner("g")], {"k": "v"})
    data = as_dict(outer)
    assert data == {"id": "a", "inner": [{"name": "f", "size": 3}, {"name": "g", "size": 0}], "tags": {"k": "v"},
                    "note": ""}
    data["tags"]["k"] = "changed"
    assert outer.tags == {"k": "v"}   # a copy, not the record's own containers


def test_a_required_field_after_a_default_is_refused():
    with pytest.raises(TypeError, match="without a default follows"):
        @record
        class Bad:
            a: int = 1
            b: int
