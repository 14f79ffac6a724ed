"""Validate a dataset against ``schema``: files, columns, dtypes, ids, edge endpoints and values.

``validate_dataset(url)`` never stops at the first problem: it collects one ``Problem`` per (table, column, kind),
with the total count and up to five example values, and returns a ``Report``. ``require_valid`` raises
``DatasetInvalid`` (a ``ValueError``) carrying that report.

Memory: node-table ids (and label user ids) are held as sorted numpy int64 arrays, 8 bytes per row; every table is
streamed from its part files in record batches of ``chunk_rows`` rows, so edges are never all in memory at once.
A table that cannot be read completely (a missing id column, an unreadable part) is not used to check references
into it, so one root cause does not show up as thousands of dangling edges.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ripple.data import schema as S
from ripple.data.dataset import DATASET_MANIFEST
from ripple.data.ids import is_id_range, lookup
from ripple.data.storage import StorageError, StorageOptions, Store, join, list_parts

log = logging.getLogger(__name__)

MAX_EXAMPLES = 5

#: Columns whose values must be >= a bound other than 0 (reach counts the seed user, so it is at least 1).
MIN_VALUE: dict[tuple[str, str], float] = {
    ("labels", "cascade_reach"): 1.0,
    ("labels", "cascade_reach_replicate"): 1.0,
}
#: Id columns of non-node tables that must refer to rows of a node table.
REFERENCES: dict[tuple[str, str], str] = {
    ("labels", "user_id"): "user",
    ("_truth/users", "id"): "user",
    ("user_names", "id"): "user",
}
#: Tables that must have at least one row (other empty edge tables are fine).
NON_EMPTY = ("user", "follows")
#: Splits that must each have at least one label row.
REQUIRED_SPLITS = ("train", "test")

_READ_ERRORS = (pa.ArrowException, OSError, ValueError)


class _Label(str):
    """A row label such as ``id=3`` or ``row 17``: printed as is, not quoted like string values."""


def _fmt(v: Any) -> str:
    if isinstance(v, _Label):
        return str(v)
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, str):
        return repr(v)
    return str(v)


def _rows(n: int) -> str:
    return f"{n:,} row" if n == 1 else f"{n:,} rows"


@dataclass
class Problem:
    """One violated invariant: where (table, column), what (message) and up to five offending examples."""

    table: str
    column: str | None
    message: str
    examples: list = field(default_factory=list)
    #: Short machine-readable kind ("dangling", "nan", "dtype", ...); one problem per (table, column, kind).
    kind: str = ""

    def __str__(self) -> str:
        where = f"{self.table}.{self.column}" if self.column else self.table
        s = f"{where}: {self.message}"
        if self.examples:
            s += f" (examples: {', '.join(_fmt(e) for e in self.examples)})"
        return s


@dataclass
class Report:
    problems: list[Problem] = field(default_factory=list)
    #: Rows per table as found in the readable part files.
    rows: dict[str, int] = field(default_factory=dict)
    url: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems

    def text(self) -> str:
        head = f"dataset {self.url}: " if self.url else "dataset: "
        if self.ok:
            lines = [head + "OK"]
        else:
            n = len(self.problems)
            lines = [head + f"INVALID, {n} problem{'s' if n != 1 else ''}"]
        if self.rows:
            lines.append("rows: " + ", ".join(f"{k}={v:,}" for k, v in self.rows.items()))
        lines += [f"  - {p}" for p in self.problems]
        if not self.ok:
            lines.append("Fix the tables named above (or regenerate the dataset with `ripple generate`) and run "
                         "`ripple validate` again.")
        return "\n".join(lines)


class DatasetInvalid(ValueError):
    """A dataset that breaks the schema's invariants; ``.report`` lists every problem.

    Its message is the whole report, or, for a single problem, one line: ``dataset URL: INVALID: table.column:
    what (examples: ...)`` (what the CLI prints after ``error:``).
    """

    def __init__(self, report: Report):
        self.report = report
        super().__init__(str(self))

    def __str__(self) -> str:
        if len(self.report.problems) == 1:
            return re.sub(r"\s*\n\s*", " ", f"dataset {self.report.url}: INVALID: {self.report.problems[0]}")
        return self.report.text()


def require_valid(url: str, options: StorageOptions | None = None, history_source: bool = False) -> Report:
    report = validate_dataset(url, options, history_source=history_source)
    if not report.ok:
        raise DatasetInvalid(report)
    return report


def validate_dataset(url: str, options: StorageOptions | None = None, chunk_rows: int = 1_000_000,
                     history_source: bool = False) -> Report:
    """``history_source``: the tables are a platform's export for ``ripple labels``, which makes the labels; they
    need no labels table, and a ``manifest.json`` is checked when present but not required."""
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}; pass a positive batch size")
    return _Validator(url, options, chunk_rows, history_source).run()


# ---------------------------------------------------------------- internals

@dataclass
class _Acc:
    """A problem being accumulated over batches and files: ``template`` gets ``{rows}`` / ``{n}`` at the end."""

    table: str
    column: str | None
    kind: str
    template: str
    count: int = 0
    examples: list = field(default_factory=list)

    def add(self, count: int, examples) -> None:
        self.count += count
        for e in examples:
            if len(self.examples) >= MAX_EXAMPLES:
                break
            if e not in self.examples:
                self.examples.append(e)

    def problem(self) -> Problem:
        # plain replace, not str.format: templates embed file names and error texts that may contain braces
        one = self.count == 1
        msg = (self.template.replace("{rows}", _rows(self.count)).replace("{n}", f"{self.count:,}")
               .replace("{s}", "s" if one else "").replace("{have}", "has" if one else "have")
               .replace("{are}", "is" if one else "are"))
        return Problem(self.table, self.column, msg, list(self.examples), self.kind)


class _IdSet:
    """Membership test against a sorted, unique int64 id array (a range of ids needs no search at all)."""

    def __init__(self, sorted_unique: np.ndarray):
        self.ids = sorted_unique
        self.id_range = is_id_range(sorted_unique)

    def missing(self, values: np.ndarray) -> np.ndarray:
        return lookup(self.ids, values, self.id_range)[1]


def _np_mask(mask: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(mask.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)


def _type_ok(actual: pa.DataType, expected: pa.DataType) -> bool:
    if pa.types.is_list(expected):  # list field names differ between writers ("item" vs "element")
        return pa.types.is_list(actual) and actual.value_type.equals(expected.value_type)
    return actual.equals(expected)


@dataclass
class _TableState:
    name: str
    files: int = 0
    rows: int = 0
    complete: bool = True  # every part readable and every column present with the right type
    complete_files: bool = True  # every part readable (row counts are exact)
    id_chunks: list = field(default_factory=list)
    #: labels at many cut times: each row's time (-1 for null), so that (user_id, time) is the unique key
    time_chunks: list = field(default_factory=list)
    split_counts: dict = field(default_factory=dict)


class _Validator:
    def __init__(self, url: str, options: StorageOptions | None, chunk_rows: int, history_source: bool = False):
        self.url = url
        self.history_source = history_source
        self.options = options
        self.chunk_rows = chunk_rows
        self.acc: dict[tuple[str, str | None, str], _Acc] = {}
        self.rows: dict[str, int] = {}
        self.idsets: dict[str, _IdSet] = {}
        self.manifest_rows: dict | None = None
        self.unlabelled_history = False

    # -- problem collection
    def note(self, table: str, column: str | None, kind: str, template: str, count: int = 1,
             examples=()) -> None:
        key = (table, column, kind)
        if key not in self.acc:
            self.acc[key] = _Acc(table, column, kind, template)
        self.acc[key].add(count, examples)

    def report(self) -> Report:
        problems = [a.problem() for a in self.acc.values()]
        return Report(problems, dict(self.rows), self.url)

    # -- driver
    def run(self) -> Report:
        try:
            self.store = Store(self.url, self.options)
        except StorageError as e:
            self.note("dataset", None, "url", str(e))
            return self.report()
        if not self.store.exists():
            self.note("dataset", None, "missing",
                      f"{self.url} does not exist (no such folder or bucket prefix); check the path, or write a "
                      "dataset there with `ripple generate`")
            return self.report()
        self.check_manifest()
        with_ids = [t for t in S.TABLES.values() if t.id_column]
        edges = [t for t in S.TABLES.values() if t.endpoints]
        others = [t for t in S.TABLES.values() if not t.id_column and not t.endpoints]
        states = {}
        for spec in [*with_ids, *others, *edges]:  # node ids first: edges are checked against them
            states[spec.name] = self.check_table(spec)
        self.check_manifest_rows(states)
        return self.report()

    # -- manifest
    def check_manifest(self) -> None:
        where = join(self.url, DATASET_MANIFEST)
        if not self.store.exists(DATASET_MANIFEST):
            if self.history_source:
                return
            self.note(DATASET_MANIFEST, None, "missing",
                      f"{where} is missing: the dataset is incomplete (writers write the manifest last) or not a "
                      "ripple dataset; finish or re-run the write (`ripple generate`)")
            return
        try:
            raw = self.store.read_json(DATASET_MANIFEST)
        except StorageError as e:
            self.note(DATASET_MANIFEST, None, "unreadable", f"{e}")
            return
        if not isinstance(raw, dict) or not isinstance(raw.get("rows"), dict):
            self.note(DATASET_MANIFEST, "rows", "format",
                      f"{where} must be a JSON object with a 'rows' mapping of table name to row count; "
                      f"found {type(raw.get('rows') if isinstance(raw, dict) else raw).__name__}; rewrite it")
            return
        if raw.get("schema_version") != S.SCHEMA_VERSION:
            self.note(DATASET_MANIFEST, "schema_version", "version",
                      f"this ripple reads schema version {S.SCHEMA_VERSION}, the manifest says "
                      f"{raw.get('schema_version')!r}; regenerate the dataset with this version",
                      examples=[raw.get("schema_version")])
        self.manifest_rows = raw["rows"]
        # an imported cascade history (``ripple import``): ``ripple labels`` derives its labels
        self.unlabelled_history = isinstance(raw.get("history"), dict) and "labels" not in raw["rows"]
        for name in self.manifest_rows:
            if name not in S.TABLES:
                log.warning("%s lists rows for unknown table %r; ignored", where, name)

    def check_manifest_rows(self, states: dict[str, _TableState | None]) -> None:
        if self.manifest_rows is None:
            return
        for name, spec in S.TABLES.items():
            st = states.get(name)
            claimed = self.manifest_rows.get(name)
            if st is None:  # no part files
                if spec.optional and isinstance(claimed, int) and claimed > 0:
                    self.note(name, None, "manifest_rows",
                              f"{DATASET_MANIFEST} says {claimed:,} rows but there are no part files; restore the "
                              "table or rewrite the manifest", examples=[claimed])
                continue
            if claimed is None:
                self.note(name, None, "manifest_rows",
                          f"{DATASET_MANIFEST} has no row count for this table, the part files hold {st.rows:,} "
                          "rows; rewrite the manifest (writers record every table they write)")
            elif not isinstance(claimed, int) or isinstance(claimed, bool):
                self.note(name, None, "manifest_rows",
                          f"{DATASET_MANIFEST} row count must be an integer, found {claimed!r}; rewrite the manifest",
                          examples=[claimed])
            elif st.complete_files and claimed != st.rows:
                self.note(name, None, "manifest_rows",
                          f"{DATASET_MANIFEST} says {claimed:,} rows, the part files hold {st.rows:,}; a part was "
                          "added, lost or rewritten after the manifest: re-run the write or restore the parts",
                          examples=[claimed, st.rows])

    # -- tables
    def check_table(self, spec: S.Table) -> _TableState | None:
        name = spec.name
        try:
            files = list_parts(self.store, name)
        except _READ_ERRORS as e:
            self.note(name, None, "unreadable", f"cannot list {join(self.url, name)} ({e}); check access")
            return None
        if not files:
            if name in S.NODE_TABLES:
                log.warning("%s is missing; references into it are not checked", name)
            if not spec.optional and not (name == "labels" and (self.history_source or self.unlabelled_history)):
                self.note(name, None, "missing",
                          f"required table is missing: no part-*.parquet files under {join(self.url, name)}; write "
                          "the table (an empty table still needs one zero-row part)")
            return None
        st = _TableState(name, files=len(files))
        for f in files:
            self.scan_file(spec, f, st)
        self.rows[name] = st.rows
        self.finish_table(spec, st)
        return st

    def scan_file(self, spec: S.Table, fname: str, st: _TableState) -> None:
        name = spec.name
        where = join(self.url, name, fname)

        def unreadable(e: Exception) -> None:
            st.complete = False
            st.complete_files = False
            self.note(name, None, "unreadable",
                      f"{{n}} part file(s) are not readable parquet (first: {where}: {e}); the file may be "
                      "truncated or corrupt: regenerate or re-upload it", examples=[fname])

        try:
            fh = self.store.fs.open(self.store.path(name, fname), "rb")
        except _READ_ERRORS as e:
            unreadable(e)
            return
        with fh:
            try:
                pf = pq.ParquetFile(fh)
                arrow_schema = pf.schema_arrow
                num_rows = pf.metadata.num_rows
            except _READ_ERRORS as e:
                unreadable(e)
                return
            columns = []
            for col in spec.columns:
                idx = arrow_schema.get_field_index(col.name)
                if idx < 0 and col.optional:  # written before the column existed, or nothing to say in it
                    continue
                if idx < 0:
                    st.complete = False
                    self.note(name, col.name, "missing_column",
                              f"column is missing from {{n}} part file(s); {name} needs columns "
                              f"{spec.column_names}: add it", examples=[fname])
                    continue
                actual = arrow_schema.field(idx).type
                if not _type_ok(actual, col.type):
                    st.complete = False
                    self.note(name, col.name, "dtype",
                              f"wrong type in {{n}} part file(s): expected {col.type}, found {actual} (in {fname}); "
                              f"write the column as {col.type}", examples=[str(actual)])
                    continue
                columns.append(col)
            st.rows += num_rows
            if not columns or num_rows == 0:
                return
            offset = 0
            try:
                for batch in pf.iter_batches(batch_size=self.chunk_rows, columns=[c.name for c in columns]):
                    self.check_batch(spec, columns, batch, fname, offset, st)
                    offset += batch.num_rows
            except _READ_ERRORS as e:
                unreadable(e)

    def check_batch(self, spec: S.Table, columns: list[S.Column], batch: pa.RecordBatch, fname: str,
                    offset: int, st: _TableState) -> None:
        name = spec.name
        present = {c.name for c in columns}
        id_arr = batch.column(spec.id_column) if spec.id_column in present else None

        def labels(idx: np.ndarray, values=None, sep: str = ": ") -> list[str]:
            idx = np.asarray(idx[:MAX_EXAMPLES], dtype=np.int64)
            if id_arr is not None:
                ids = id_arr.take(pa.array(idx)).to_pylist()
                out = [f"{spec.id_column}={i}" for i in ids]
            else:
                out = [f"{fname} row {offset + int(i)}" for i in idx]
            if values is not None:
                out = [f"{o}{sep}{_fmt(v)}" for o, v in zip(out, values[:MAX_EXAMPLES])]
            return [_Label(o) for o in out]

        for col in columns:
            arr = batch.column(col.name)
            self.check_values(name, col, arr, labels, is_id=(col.name == spec.id_column and name != "labels"))

        if spec.id_column in present:
            keep = pc.is_valid(id_arr)
            st.id_chunks.append(pc.filter(id_arr, keep).to_numpy(zero_copy_only=False).astype(np.int64, copy=False))
            if name == "labels":  # a part without the (optional) time column: null times
                times = (pc.fill_null(pc.filter(batch.column("time"), keep), -1).to_numpy(zero_copy_only=False)
                         if "time" in present else np.full(len(st.id_chunks[-1]), -1))
                st.time_chunks.append(times.astype(np.int64, copy=False))
        if name == "labels" and "split" in present:
            for item in pc.value_counts(batch.column("split")).to_pylist():
                st.split_counts[item["values"]] = st.split_counts.get(item["values"], 0) + item["counts"]
        if spec.endpoints:
            self.check_endpoints(spec, batch, present)

    def check_values(self, name: str, col: S.Column, arr: pa.Array, labels, is_id: bool) -> None:
        if arr.null_count and not col.nullable:
            bad = np.flatnonzero(_np_mask(arr.is_null()))
            self.note(name, col.name, "null", "{rows} {are} null; every row needs a value", len(bad), labels(bad))
            arr_nn = pc.drop_null(arr)
        else:
            arr_nn = arr
        if pa.types.is_list(col.type):
            if col.width is not None:
                lengths = pc.list_value_length(arr)
                bad = np.flatnonzero(_np_mask(pc.not_equal(lengths, col.width)))
                if len(bad):
                    found = lengths.take(pa.array(bad[:MAX_EXAMPLES])).to_pylist()
                    self.note(name, col.name, "width",
                              f"{{rows}} {{have}} the wrong number of elements; every row must have exactly "
                              f"{col.width}", len(bad), labels(bad, found, sep=" has "))
            values = arr.flatten()
            parents = None

            def rows_of(mask: np.ndarray) -> np.ndarray:
                nonlocal parents
                if parents is None:
                    parents = pc.list_parent_indices(arr).to_numpy(zero_copy_only=False)
                return np.unique(parents[mask])

            if values.null_count:  # a null element reads as NaN in the feature matrix (features.list_matrix)
                rows = rows_of(_np_mask(values.is_null()))
                self.note(name, col.name, "null_element", "{rows} contain{s} null elements; every element of the "
                          "list needs a value", len(rows), labels(rows))
            self.check_scalars(name, col, values, labels, rows_of, is_id=False)
        else:
            self.check_scalars(name, col, arr, labels, None, is_id=is_id)
        if col.allowed is not None:
            bad = ~_np_mask(pc.is_in(arr_nn, value_set=pa.array(col.allowed, type=arr.type)))
            n = int(bad.sum())
            if n:
                vals = pc.unique(arr_nn.filter(pa.array(bad))).to_pylist()
                self.note(name, col.name, "not_allowed",
                          f"{{rows}} {{have}} values outside the allowed set {list(col.allowed)}; map or drop them",
                          n, vals)

    def check_scalars(self, name: str, col: S.Column, values: pa.Array, labels, rows_of, is_id: bool) -> None:
        """NaN/inf and lower bounds on scalar values (or the flattened values of a list column)."""
        list_col = rows_of is not None

        def where(mask: np.ndarray) -> np.ndarray:
            return rows_of(mask) if list_col else np.flatnonzero(mask)

        vtype = values.type
        if pa.types.is_floating(vtype) and col.finite:
            nan = _np_mask(pc.is_nan(values))
            if nan.any():
                rows = where(nan)
                self.note(name, col.name, "nan", "{rows} contain{s} NaN; values must be finite", len(rows), labels(rows))
            inf = _np_mask(pc.is_inf(values))
            if inf.any():
                rows = where(inf)
                vals = None if list_col else values.filter(pa.array(inf)).to_pylist()
                self.note(name, col.name, "inf", "{rows} contain{s} +inf or -inf; values must be finite",
                          len(rows), labels(rows, vals))
        bound = MIN_VALUE.get((name, col.name))
        if bound is None and (col.non_negative or is_id):
            bound = 0
        if bound is not None and (pa.types.is_integer(vtype) or pa.types.is_floating(vtype)):
            low = _np_mask(pc.less(values, pa.scalar(bound, type=vtype)))
            if low.any():
                vals = values.filter(pa.array(low)).to_pylist()
                n = len(where(low)) if list_col else int(low.sum())
                if bound == 0:
                    what = "ids" if is_id else "values"
                    msg = f"{{rows}} {{have}} negative {what}; {col.name} must be >= 0"
                elif (name, col.name) in MIN_VALUE and name == "labels":
                    msg = (f"{{rows}} {{are}} below {_fmt(float(bound))}; {col.name} must be >= {_fmt(float(bound))} "
                           "because reach counts the seed user")
                else:
                    msg = f"{{rows}} {{are}} below {_fmt(float(bound))}; {col.name} must be >= {_fmt(float(bound))}"
                self.note(name, col.name, "below_min", msg, n, vals)

    def check_endpoints(self, spec: S.Table, batch: pa.RecordBatch, present: set[str]) -> None:
        name = spec.name
        for col_name, node_type in zip(("src", "dst"), spec.endpoints):
            if col_name not in present:
                continue
            ids = self.idsets.get(node_type)
            if ids is None:
                continue
            vals = pc.drop_null(batch.column(col_name)).to_numpy(zero_copy_only=False)
            miss = ids.missing(vals)
            n = int(miss.sum())
            if n:
                examples = _first_distinct(vals[miss])
                self.note(name, col_name, "dangling",
                          f"{{rows}} reference{{s}} {node_type} ids that do not exist in {node_type}.id; every "
                          f"{col_name} must be an existing {node_type} id: drop those edges or add the nodes",
                          n, examples)
        if spec.forbid_self_loops and {"src", "dst"} <= present:
            loop = _np_mask(pc.equal(batch.column("src"), batch.column("dst")))
            n = int(loop.sum())
            if n:
                examples = _first_distinct(batch.column("src").to_numpy(zero_copy_only=False)[loop])
                self.note(name, "src", "self_loop",
                          f"{{rows}} {{have}} src == dst (self-loops), which {name} forbids: drop them", n, examples)

    def finish_table(self, spec: S.Table, st: _TableState) -> None:
        name = spec.name
        if name in NON_EMPTY and st.rows == 0 and st.complete_files:
            self.note(name, None, "empty",
                      f"the {name} table has 0 rows; a dataset needs at least one {name} row: write them")
        if spec.id_column and st.id_chunks:
            ids = np.concatenate(st.id_chunks)
            if st.time_chunks:  # labels at many cut times: the key is (user_id, time)
                times = np.concatenate(st.time_chunks)
                order = np.lexsort((times, ids))
                ids, times = ids[order], times[order]
                dup = (ids[1:] == ids[:-1]) & (times[1:] == times[:-1])
            else:
                ids = np.sort(ids)
                dup = ids[1:] == ids[:-1]
            key = f"{spec.id_column} at each time" if st.time_chunks and (times >= 0).any() else spec.id_column
            st.id_chunks, st.time_chunks = [], []
            if dup.any():
                dups = np.unique(ids[1:][dup])
                self.note(name, spec.id_column, "duplicate",
                          f"duplicated ids: {{n}} distinct value{'s' if len(dups) != 1 else ''} repeated in {_rows(int(dup.sum()))} more; "
                          f"{key} must be unique: deduplicate the table", len(dups), dups[:MAX_EXAMPLES].tolist())
                unique = ids[np.concatenate(([True], ~dup))]
            else:
                unique = ids
            ref = REFERENCES.get((name, spec.id_column))
            if ref is not None and ref in self.idsets:
                miss = self.idsets[ref].missing(ids)
                if miss.any():
                    bad = np.unique(ids[miss])
                    self.note(name, spec.id_column, "dangling",
                              f"{{rows}} reference{{s}} {ref} ids that do not exist in {ref}.id; drop those rows or add "
                              f"the {ref}s", int(miss.sum()), bad[:MAX_EXAMPLES].tolist())
            if name in S.NODE_TABLES and st.complete:
                self.idsets[name] = _IdSet(unique)
        elif spec.id_column and name in S.NODE_TABLES and st.complete and name not in NON_EMPTY:
            # an empty content/community table is allowed: edges into it dangle. An empty user table is
            # reported once above instead of once per edge table.
            self.idsets[name] = _IdSet(np.empty(0, dtype=np.int64))
        if name in S.NODE_TABLES and name not in self.idsets:
            log.warning("%s could not be read completely or is empty; references into it are not checked", name)
        if name == "labels" and st.complete:
            missing = [s for s in REQUIRED_SPLITS if st.split_counts.get(s, 0) == 0]
            if missing:
                found = ", ".join(f"{s}={st.split_counts.get(s, 0)}" for s in S.SPLITS)
                self.note(name, "split", "split_missing",
                          f"labels need at least one 'train' and one 'test' row; found {found}: assign some users "
                          "to the missing split(s)", len(missing), missing)


def _first_distinct(values: np.ndarray) -> list:
    """Up to MAX_EXAMPLES distinct values, in order of first appearance."""
    out: list = []
    for v in values[: MAX_EXAMPLES * 64].tolist():
        if v not in out:
            out.append(v)
            if len(out) == MAX_EXAMPLES:
                break
    return out
