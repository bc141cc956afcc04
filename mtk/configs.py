"""Typed configs: plain dataclasses that round-trip through JSON.

Every model and training configuration in the kit is a `@dataclass` with named presets
(`smoke`, `default`, `paper`). Inheriting `Config` gives it `to_dict()` (JSON-ready: tuples become
lists, nested configs become dicts) and `from_dict()` (the inverse, read from the field types), which
checkpoints and `runs/<recipe>/recipe.json` use.
"""
from __future__ import annotations

import dataclasses
import typing


class Config:
    """Mixin for dataclass configs: `to_dict()` / `from_dict()`.

    A field added to a config after runs were keyed on it goes in the class's `ADDED_FIELDS` ({name: default}):
    `to_dict()` leaves it out while it holds that default, so every earlier run's key (a hash of `to_dict()`)
    stays the same, and `from_dict()` of an older dict fills it in."""

    ADDED_FIELDS: typing.ClassVar[dict] = {}

    def to_dict(self) -> dict:
        def plain(v):
            if dataclasses.is_dataclass(v):
                added = getattr(v, "ADDED_FIELDS", {})
                return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)
                        if not (f.name in added and getattr(v, f.name) == added[f.name])}
            if isinstance(v, (tuple, list)):
                return [plain(x) for x in v]
            return v
        return plain(self)

    @classmethod
    def from_dict(cls, d: dict):
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"{cls.__name__}.from_dict: unknown fields {sorted(unknown)}")
        kw = {}
        for k, v in d.items():
            t = hints.get(k)
            if isinstance(t, type) and dataclasses.is_dataclass(t) and isinstance(v, dict):
                v = t.from_dict(v) if issubclass(t, Config) else t(**v)
            elif typing.get_origin(t) is tuple and isinstance(v, list):
                v = tuple(v)
            kw[k] = v
        return cls(**kw)
