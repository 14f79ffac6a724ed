"""Reading and writing the dataset layout of DESIGN.md (``<data>/<table>/part-*.parquet`` + ``manifest.json``)."""
from __future__ import annotations

import logging
from dataclasses import asdict

import pyarrow as pa

from ripple.data import schema as S
from ripple.data.storage import (Store, StorageError, StorageOptions, join, list_parts, read_table_dir,
                                 table_to_parquet_bytes)

log = logging.getLogger(__name__)

DATASET_MANIFEST = "manifest.json"


class DatasetWriter:
    """Streams tables into ``<data>/<table>/part-NNNNN.parquet``; ``close`` writes ``manifest.json`` last.

    Opening a writer deletes an existing ``manifest.json`` first, so a dataset being (re)written is never read.
    """

    def __init__(self, url: str, options: StorageOptions | None = None):
        self.store = Store(url, options)
        self.store.rm(DATASET_MANIFEST)
        self.rows: dict[str, int] = {}
        self._parts: dict[str, int] = {}

    def write(self, table_name: str, table: pa.Table) -> None:
        spec = S.TABLES[table_name]
        for c in spec.columns:  # an optional column the writer has nothing for: all null
            if c.optional and c.name not in table.column_names:
                table = table.append_column(c.name, pa.nulls(table.num_rows, c.type))
        missing = [c for c in spec.column_names if c not in table.column_names]
        if missing:
            raise StorageError(f"table {table_name!r}: missing column(s) {missing}; expected {spec.column_names}")
        table = table.select(spec.column_names).cast(spec.arrow_schema())
        idx = self._parts.get(table_name, 0)
        if idx == 0:  # first chunk of this table in this write: drop stale parts of an earlier write
            self.store.rm(table_name, recursive=True)
        self.store.write_bytes(table_to_parquet_bytes(table), table_name, f"part-{idx:05d}.parquet")
        self._parts[table_name] = idx + 1
        self.rows[table_name] = self.rows.get(table_name, 0) + table.num_rows

    def close(self, absent: tuple[str, ...] = (), **manifest_fields) -> S.DatasetManifest:
        """``absent``: tables this dataset does not have at all (an imported history has no labels until
        ``ripple labels`` derives them); like optional tables, none of their parts survives from an older write."""
        for name, spec in S.TABLES.items():
            if name in self.rows:
                continue
            if spec.optional or name in absent:  # a table this write did not produce must not survive an older one
                self.store.rm(name, recursive=True)
            else:  # an empty table still gets a (zero-row) part
                self.write(name, spec.arrow_schema().empty_table())
        m = S.DatasetManifest(rows=dict(self.rows), **manifest_fields)
        self.store.write_json(asdict(m), DATASET_MANIFEST)
        return m


class Dataset:
    """A committed dataset. Opening it checks the manifest exists; tables are read on demand."""

    def __init__(self, url: str, options: StorageOptions | None = None):
        self.url = url
        self.store = Store(url, options)
        if not self.store.exists(DATASET_MANIFEST):
            if not self.store.exists():
                raise StorageError(f"dataset {url!r} does not exist (no such folder or bucket prefix)")
            raise StorageError(f"dataset {url!r} has no {DATASET_MANIFEST}: it is incomplete or not a ripple "
                               "dataset; write it with `ripple generate` or add the manifest last")
        raw = self.store.read_json(DATASET_MANIFEST)
        if not isinstance(raw, dict) or not isinstance(raw.get("rows"), dict):
            raise StorageError(f"{join(url, DATASET_MANIFEST)}: expected an object with a 'rows' mapping")
        if raw.get("schema_version") != S.SCHEMA_VERSION:
            raise StorageError(f"{join(url, DATASET_MANIFEST)}: schema_version={raw.get('schema_version')!r}, "
                               f"this ripple reads version {S.SCHEMA_VERSION}")
        self.manifest = S.DatasetManifest(**{k: raw[k] for k in S.MANIFEST_FIELDS if k in raw})

    def has(self, name: str) -> bool:
        return bool(list_parts(self.store, name))

    def read(self, name: str, columns: list[str] | None = None) -> pa.Table:
        """The table; an optional column absent from its files reads as all null."""
        if name not in S.TABLES:
            raise KeyError(f"unknown table {name!r}; tables are {sorted(S.TABLES)}")
        spec = S.TABLES[name]
        optional = [c for c in spec.columns if c.optional and (columns is None or c.name in columns)]
        if not optional:
            return read_table_dir(self.store, name, columns)
        table = read_table_dir(self.store, name)
        for c in optional:
            if c.name not in table.column_names:
                table = table.append_column(c.name, pa.nulls(table.num_rows, c.type))
        return table if columns is None else table.select(columns)
