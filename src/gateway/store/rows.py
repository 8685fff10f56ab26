"""Rows from record types: how a frozen dataclass maps onto one table, read off its `fields()`.

Each field is the column of the same name, converted by its annotation: `bool`, `int` and
`float` are read back as such (SQLite answers 0 or 1 for a BOOLEAN), `str` passes through,
and a dict, a mapping or a tuple is stored as JSON text (a mapping's '' reads as empty);
`X | None` keeps NULL. A field whose type is itself a dataclass (a record's definition)
spreads its fields over columns of the same row. `column()` metadata says the rest: a
column named unlike its field, a value encrypted with the store's cipher, and an embedded
definition's columns named unlike its fields. A new record field thus needs its column in
the schema, and no mapping code.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, cast

import orjson

if TYPE_CHECKING:
    from gateway.store import Connection

R = TypeVar("R")
Convert = Callable[[Any], Any]

METADATA_KEY = "gateway.store.column"


class Cipher(Protocol):
    """Seals encrypted columns: the store's `HeaderCipher`."""

    def encrypt_headers(self, headers: Mapping[str, str]) -> str: ...

    def decrypt_headers(self, token: str) -> dict[str, str]: ...


@dataclass(frozen=True, slots=True)
class ColumnInfo:
    name: str | None = None
    encrypted: bool = False
    renamed: Mapping[str, str] = field(default_factory=dict)


def column(
    name: str | None = None,
    *,
    encrypted: bool = False,
    renamed: Mapping[str, str] | None = None,
) -> dict[str, ColumnInfo]:
    """Field metadata for what a field's name and type do not say about its column.

    `name` is the column's name; `encrypted` seals a mapping of strings with the store's
    cipher; `renamed` gives, for an embedded definition, the columns of those of its fields
    that are named otherwise.
    """
    return {METADATA_KEY: ColumnInfo(name, encrypted, dict(renamed or {}))}


def _same(value: Any) -> Any:
    return value


def _to_json(value: Any) -> str:
    return orjson.dumps(value).decode("utf-8")


def _to_mapping(text: str) -> Any:
    # A mapping column added to a table with rows defaults to '', which is no JSON.
    return orjson.loads(text) if text else {}


def _to_tuple(text: str) -> tuple[Any, ...]:
    return tuple(orjson.loads(text))


def _nullable(convert: Convert) -> Convert:
    if convert is _same:
        return convert

    def nullable(value: Any) -> Any:
        return None if value is None else convert(value)

    return nullable


SCALARS: dict[Any, tuple[Convert, Convert]] = {
    bool: (_same, bool),
    int: (_same, int),
    float: (_same, float),
    str: (_same, _same),
}


def _codec(hint: Any, where: str) -> tuple[Convert, Convert]:
    """How a field annotated `hint` goes into its column, and how it comes back."""
    origin = typing.get_origin(hint) or hint
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        inner = [arg for arg in args if arg is not type(None)]
        if len(inner) == 1:
            dump, load = _codec(inner[0], where)
            return _nullable(dump), _nullable(load)
    elif origin in SCALARS:
        return SCALARS[origin]
    elif origin is tuple:
        return _to_json, _to_tuple
    elif isinstance(origin, type) and issubclass(origin, Mapping):
        return _to_json, _to_mapping
    raise TypeError(f"{where}: no column type for {hint!r}")


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    get: Callable[[Any], Any]
    """Reads the field's value off a record."""
    dump: Convert
    load: Convert
    encrypted: bool


@dataclass(frozen=True, slots=True)
class Shape:
    """How to rebuild one dataclass from a row's decoded values."""

    type: type
    parts: tuple[tuple[str, int | Shape], ...]
    """Each field with its column's index, or the shape of its embedded dataclass."""

    def build(self, values: Sequence[Any]) -> Any:
        return self.type(
            **{
                name: values[part] if isinstance(part, int) else part.build(values)
                for name, part in self.parts
            }
        )


def layout(
    cls: type,
    columns: list[Column],
    path: tuple[str, ...] = (),
    renamed: Mapping[str, str] | None = None,
) -> Shape:
    """The shape of `cls`, appending the columns of its fields to `columns` in field order."""
    hints = typing.get_type_hints(cls)
    parts: list[tuple[str, int | Shape]] = []
    for spec in dataclasses.fields(cls):
        info: ColumnInfo = spec.metadata.get(METADATA_KEY, ColumnInfo())
        hint = hints[spec.name]
        here = (*path, spec.name)
        if dataclasses.is_dataclass(hint):
            parts.append((spec.name, layout(cast(type, hint), columns, here, info.renamed)))
            continue
        dotted = ".".join(here)
        dump, load = (_same, _same) if info.encrypted else _codec(hint, f"{cls.__name__}.{dotted}")
        parts.append((spec.name, len(columns)))
        columns.append(
            Column(
                name=info.name or (renamed or {}).get(spec.name, spec.name),
                get=attrgetter(dotted),
                dump=dump,
                load=load,
                encrypted=info.encrypted,
            )
        )
    return Shape(cls, tuple(parts))


class Rows(Generic[R]):
    """How records of one dataclass map onto the rows of one table, keyed by one column."""

    def __init__(self, record_type: type[R], table: str, key: str) -> None:
        columns: list[Column] = []
        self.record_type = record_type
        self._shape = layout(record_type, columns)
        self.columns = tuple(columns)
        self.table = table
        self._by_name = {c.name: c for c in columns}
        if len(self._by_name) != len(columns):
            raise TypeError(f"{record_type.__name__} maps two fields onto one column")
        if key not in self._by_name:
            raise TypeError(f"{record_type.__name__} has no column {key!r}")
        self.key = key
        names = ", ".join(c.name for c in columns)
        marks = ", ".join("?" for _ in columns)
        self.select = f"SELECT {names} FROM {table}"
        self.insert = f"INSERT INTO {table} ({names}) VALUES ({marks})"

    def value(self, record: R, column: str) -> Any:
        """The value of one column's field, as the record holds it."""
        return self._by_name[column].get(record)

    def params(self, record: R, cipher: Cipher | None = None) -> tuple[Any, ...]:
        """The record's values for `insert`, in column order."""
        return tuple(self._dump(c, c.get(record), cipher) for c in self.columns)

    def record(self, row: Sequence[Any], cipher: Cipher | None = None) -> R:
        """The record of a row read with `select`."""
        values = [self._load(c, value, cipher) for c, value in zip(self.columns, row, strict=True)]
        return cast(R, self._shape.build(values))

    def update(
        self, record: R, keep: Collection[str] = (), cipher: Cipher | None = None
    ) -> tuple[str, tuple[Any, ...]]:
        """The UPDATE (and its parameters) that writes `record` over the row of its key,
        leaving the columns in `keep` as stored."""
        written = [c for c in self.columns if c.name != self.key and c.name not in keep]
        key = self.value(record, self.key)
        return self._update(written, [c.get(record) for c in written], key, cipher)

    def assign(
        self, key: Any, changes: Mapping[str, Any], cipher: Cipher | None = None
    ) -> tuple[str, tuple[Any, ...]]:
        """The UPDATE (and its parameters) that sets some columns of the row of `key`."""
        written = [self._by_name[name] for name in sorted(changes)]
        return self._update(written, [changes[c.name] for c in written], key, cipher)

    def _update(
        self, written: list[Column], values: list[Any], key: Any, cipher: Cipher | None
    ) -> tuple[str, tuple[Any, ...]]:
        assignments = ", ".join(f"{c.name} = ?" for c in written)
        params = [self._dump(c, value, cipher) for c, value in zip(written, values, strict=True)]
        return f"UPDATE {self.table} SET {assignments} WHERE {self.key} = ?", (*params, key)

    async def fetch(
        self,
        conn: Connection,
        where: str = "",
        params: Sequence[Any] = (),
        cipher: Cipher | None = None,
    ) -> list[R]:
        """The records of the rows `where` selects, in key order."""
        rows = await conn.fetchall(f"{self.select} {where} ORDER BY {self.key}", params)
        return [self.record(row, cipher) for row in rows]

    async def get(self, conn: Connection, key: str, cipher: Cipher | None = None) -> R | None:
        found = await self.fetch(conn, f"WHERE {self.key} = ?", (key,), cipher)
        return found[0] if found else None

    def _dump(self, column: Column, value: Any, cipher: Cipher | None) -> Any:
        if column.encrypted:
            return self._cipher(cipher).encrypt_headers(value)
        return column.dump(value)

    def _load(self, column: Column, value: Any, cipher: Cipher | None) -> Any:
        if column.encrypted:
            return self._cipher(cipher).decrypt_headers(value)
        return column.load(value)

    def _cipher(self, cipher: Cipher | None) -> Cipher:
        if cipher is None:
            raise TypeError(f"table {self.table!r} has an encrypted column: pass the cipher")
        return cipher
