"""Record classes for the run path: a class body of annotated fields gets an __init__, and
as_dict() turns records back into plain data.

This is the part of the standard dataclasses module that nxrun needs. dataclasses imports
`inspect` (with ast, dis and tokenize), which costs about a tenth of a cached run of 500 tasks in
start-up time alone, so the modules a run imports declare their records with @record instead.

    @record
    class Task:
        id: str
        deps: list[str] = default_factory(list)
        description: str = ""
"""

from __future__ import annotations

_MISSING = object()


class _Factory:
    __slots__ = ("make",)

    def __init__(self, make):
        self.make = make


def default_factory(make) -> object:
    """A field default made fresh for each instance (a list, a dict)."""
    return _Factory(make)


def record(cls: type) -> type:
    """Give `cls` an __init__ taking its annotated fields in order (those with a default last)."""
    names = tuple(cls.__dict__.get("__annotations__", {}))
    params, body = [], []
    scope: dict[str, object] = {"_MISSING": _MISSING}
    seen_default = False
    for name in names:
        default = cls.__dict__.get(name, _MISSING)
        if default is _MISSING:
            if seen_default:
                raise TypeError(f"{cls.__name__}.{name}: a field without a default follows one with a default")
            params.append(name)
            body.append(f"self.{name} = {name}")
        elif isinstance(default, _Factory):
            seen_default = True
            scope[f"_make_{name}"] = default.make
            params.append(f"{name}=_MISSING")
            body.append(f"self.{name} = _make_{name}() if {name} is _MISSING else {name}")
            delattr(cls, name)
        else:
            seen_default = True
            scope[f"_default_{name}"] = default
            params.append(f"{name}=_default_{name}")
            body.append(f"self.{name} = {name}")
    source = f"def __init__(self, {', '.join(params)}):\n    " + ("\n    ".join(body) or "pass") + "\n"
    exec(source, scope)  # noqa: S102 - the source is built from the class's own field names
    init = scope["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    cls.__init__ = init
    cls.__record_fields__ = names
    return cls


def field_names(cls_or_obj) -> tuple[str, ...]:
    return cls_or_obj.__record_fields__


def as_dict(obj):
    """A record as a dict of its fields, recursively through records, lists, tuples and dicts."""
    if hasattr(type(obj), "__record_fields__"):
        return {name: as_dict(getattr(obj, name)) for name in obj.__record_fields__}
    if isinstance(obj, (list, tuple)):
        return type(obj)(as_dict(v) for v in obj)
    if isinstance(obj, dict):
        return {k: as_dict(v) for k, v in obj.items()}
    return obj
