"""Schema drift: how a schema found at a source or in the warehouse differs from the contract's."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa


def _normal(type_: pa.DataType) -> pa.DataType:
    """Spellings that mean the same data: large and view strings, list element names."""
    if pa.types.is_large_string(type_) or pa.types.is_string_view(type_):
        return pa.string()
    if pa.types.is_list(type_) or pa.types.is_large_list(type_) or pa.types.is_list_view(type_):
        return pa.list_(_normal(type_.value_type))
    return type_


def same_type(found: pa.DataType, expected: pa.DataType) -> bool:
    return _normal(found) == _normal(expected)


@dataclass(frozen=True)
class SchemaDrift:
    """Columns ``found`` has that the contract does not, lacks, or holds with another type."""

    added: tuple[tuple[str, pa.DataType], ...] = ()
    missing: tuple[tuple[str, pa.DataType], ...] = ()
    retyped: tuple[tuple[str, pa.DataType, pa.DataType], ...] = ()  # (column, found, expected)

    @property
    def breaking(self) -> bool:
        """A missing or retyped column cannot be loaded; an added one is ignored with a warning."""
        return bool(self.missing or self.retyped)

    def describe(self) -> str:
        parts = [f"column {name} ({type_}) is missing" for name, type_ in self.missing]
        parts += [f"column {name} is {found}, expected {want}" for name, found, want in self.retyped]
        parts += [f"column {name} ({type_}) is not in the contract" for name, type_ in self.added]
        return "; ".join(parts)

    def as_json(self) -> dict:
        return {
            "added": {name: str(t) for name, t in self.added},
            "missing": {name: str(t) for name, t in self.missing},
            "retyped": {name: {"found": str(f), "expected": str(w)} for name, f, w in self.retyped},
        }


def schema_drift(found: pa.Schema, expected: pa.Schema) -> SchemaDrift:
    have = {f.name: f.type for f in found}
    want = {f.name: f.type for f in expected}
    return SchemaDrift(
        added=tuple((n, t) for n, t in have.items() if n not in want),
        missing=tuple((n, t) for n, t in want.items() if n not in have),
        retyped=tuple((n, have[n], t) for n, t in want.items() if n in have and not same_type(have[n], t)),
    )
