"""The one IO module: any fsspec URL -> filesystem, parquet read/write, atomic commits.

Every byte ripple reads or writes goes through here (rule: one filesystem module). Local paths need no
credentials; ``s3://`` takes an endpoint from ``StorageOptions`` (``--s3-endpoint-url``) and credentials from the
usual AWS variables, which are never logged or written anywhere.

Commit protocol for a folder of parts (embeddings, partitions):
  1. ``begin``: delete ``_manifest.json`` so readers refuse the folder while it is rewritten;
  2. ``write_part`` (any number of processes): each part is a uniquely named parquet file; its row count and
     sha256 are returned to the committer;
  3. ``commit``: write ``_manifest.json`` listing exactly the parts, then delete parts it does not list.
Readers read only the parts the manifest lists and check row counts and checksums, so a killed writer leaves
either the previous complete output or no readable output, never half of one.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import posixpath
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Iterator

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

log = logging.getLogger(__name__)

MANIFEST = "_manifest.json"
PARTS_FORMAT = "ripple.parts/1"


class StorageError(ValueError):
    """A URL, file or manifest that cannot be used as asked; the message names it and says what to do."""


@dataclass
class StorageOptions:
    """How to reach object storage. Secrets are not fields: they come from the AWS environment variables."""

    endpoint_url: str | None = None
    anon: bool = False
    region: str | None = None
    #: Extra keyword arguments for the fsspec filesystem (non-secret settings only).
    extra: dict[str, Any] = field(default_factory=dict)

    def for_protocol(self, protocol: str) -> dict[str, Any]:
        if protocol not in ("s3", "s3a"):
            return dict(self.extra)
        opts: dict[str, Any] = {"anon": self.anon, **self.extra}
        client_kwargs = dict(opts.pop("client_kwargs", {}))
        if self.endpoint_url:
            client_kwargs["endpoint_url"] = self.endpoint_url
        if self.region:
            client_kwargs["region_name"] = self.region
        if client_kwargs:
            opts["client_kwargs"] = client_kwargs
        return opts


def _protocol(url: str) -> str:
    return url.split("://", 1)[0] if "://" in url else "file"


def filesystem(url: str, options: StorageOptions | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """``fsspec.core.url_to_fs`` with ripple's options; returns (filesystem, path inside it)."""
    options = options or StorageOptions()
    try:
        return fsspec.core.url_to_fs(url, **options.for_protocol(_protocol(url)))
    except (ImportError, ValueError, OSError) as e:
        raise StorageError(f"cannot open storage URL {url!r}: {e}. Use a local path or s3://bucket/prefix.") from e


def absolute_url(url: str) -> str:
    """Local paths made absolute against this process's working directory; other URLs unchanged.

    Ray workers run in their own working directories, so a relative path must be resolved where the user
    typed it, before the config is shipped to them.
    """
    import os

    if _protocol(url) != "file":
        return url
    return os.path.abspath(os.path.expanduser(url.removeprefix("file://")))


def join(url: str, *parts: str) -> str:
    if "://" in url:
        proto, rest = url.split("://", 1)
        return f"{proto}://" + posixpath.join(rest.rstrip("/"), *parts)
    return posixpath.join(url, *parts)


class Store:
    """A root URL plus its filesystem; the handle every component passes around."""

    def __init__(self, url: str, options: StorageOptions | None = None):
        self.url = url.rstrip("/") if url not in ("/",) else url
        self.options = options or StorageOptions()
        self.fs, self.root = filesystem(self.url, self.options)
        if _protocol(self.url) != "file":
            self.fs.invalidate_cache()  # fsspec shares instances: never trust a listing another writer cached

    def __reduce__(self):  # filesystems hold sockets; ship the URL and reopen
        return (Store, (self.url, self.options))

    def child(self, *parts: str) -> "Store":
        return Store(join(self.url, *parts), self.options)

    def path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts) if parts else self.root

    def exists(self, *parts: str) -> bool:
        return self.fs.exists(self.path(*parts))

    def ls(self, *parts: str) -> list[str]:
        p = self.path(*parts)
        if not self.fs.exists(p):
            return []
        return sorted(posixpath.basename(x.rstrip("/")) for x in self.fs.ls(p, detail=False))

    def makedirs(self, *parts: str) -> None:
        self.fs.makedirs(self.path(*parts), exist_ok=True)

    def read_bytes(self, *parts: str) -> bytes:
        p = self.path(*parts)
        try:
            with self.fs.open(p, "rb") as f:
                return f.read()
        except FileNotFoundError as e:
            raise StorageError(f"{join(self.url, *parts)} does not exist") from e

    def write_bytes(self, data: bytes, *parts: str) -> None:
        """Write a whole object. On S3 a PUT is atomic; locally write a temp file and rename it into place."""
        p = self.path(*parts)
        parent = posixpath.dirname(p)
        if parent:
            self.fs.makedirs(parent, exist_ok=True)
        if _protocol(self.url) == "file" or self.fs.protocol in ("file", ("file", "local")):
            tmp = f"{p}.tmp-{uuid.uuid4().hex[:8]}"
            try:
                with self.fs.open(tmp, "wb") as f:
                    f.write(data)
                self.fs.mv(tmp, p)
            except BaseException:  # a failed write leaves the old file (or none), never a stray temp file
                with contextlib.suppress(OSError):  # best effort: the original error is what matters
                    if self.fs.exists(tmp):
                        self.fs.rm(tmp)
                raise
        else:
            with self.fs.open(p, "wb") as f:
                f.write(data)

    def put_file(self, local_path: str, *parts: str) -> None:
        """Upload a local file without reading it into memory (multipart on S3; temp + rename locally)."""
        p = self.path(*parts)
        parent = posixpath.dirname(p)
        if parent:
            self.fs.makedirs(parent, exist_ok=True)
        if _protocol(self.url) == "file":
            import shutil

            tmp = f"{p}.tmp-{uuid.uuid4().hex[:8]}"
            shutil.copyfile(local_path, tmp)
            self.fs.mv(tmp, p)
        else:
            self.fs.put_file(local_path, p)

    def read_json(self, *parts: str) -> dict:
        raw = self.read_bytes(*parts)
        try:
            return json.loads(raw)
        except json.JSONDecodeError as e:
            raise StorageError(f"{join(self.url, *parts)} is not valid JSON ({e}); rewrite it or remove it") from e

    def write_json(self, obj: Any, *parts: str) -> None:
        self.write_bytes(json.dumps(obj, indent=2, sort_keys=True).encode(), *parts)

    def rm(self, *parts: str, recursive: bool = False) -> None:
        p = self.path(*parts)
        if self.fs.exists(p):
            self.fs.rm(p, recursive=recursive)


# ---------------------------------------------------------------- parquet

def table_to_parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def read_parquet_bytes(data: bytes, where: str, columns: list[str] | None = None) -> pa.Table:
    try:
        return pq.read_table(io.BytesIO(data), columns=columns)
    except (pa.ArrowInvalid, OSError) as e:
        raise StorageError(f"{where} is not a readable parquet file ({e}); it may be truncated — "
                           "regenerate or re-upload it") from e


def read_parquet(store: Store, *parts: str, columns: list[str] | None = None) -> pa.Table:
    return read_parquet_bytes(store.read_bytes(*parts), join(store.url, *parts), columns)


def list_parts(store: Store, *parts: str) -> list[str]:
    return [n for n in store.ls(*parts) if n.startswith("part-") and n.endswith(".parquet")]


def read_table_dir(store: Store, name: str, columns: list[str] | None = None) -> pa.Table:
    """All ``part-*.parquet`` files of a dataset table folder, concatenated in name order."""
    files = list_parts(store, name)
    if not files:
        raise StorageError(f"table {name!r}: no part-*.parquet files under {join(store.url, name)}")
    tables = [read_parquet(store, name, f, columns=columns) for f in files]
    try:
        return pa.concat_tables(tables, promote_options="none")
    except pa.ArrowInvalid as e:
        raise StorageError(f"table {name!r}: parts under {join(store.url, name)} disagree on schema: {e}") from e


def iter_table_batches(store: Store, name: str, columns: list[str] | None = None,
                       batch_rows: int = 1 << 20) -> Iterator[pa.RecordBatch]:
    """Stream a table folder in bounded record batches (partitioner and loaders at scale)."""
    for f in list_parts(store, name):
        with store.fs.open(store.path(name, f), "rb") as fh:
            pf = pq.ParquetFile(fh)
            yield from pf.iter_batches(batch_size=batch_rows, columns=columns)


# ---------------------------------------------------------------- committed part folders

@dataclass
class PartInfo:
    path: str  # file name inside the folder
    rows: int
    sha256: str
    bytes: int


def begin(store: Store) -> None:
    """Make the folder unreadable until the next ``commit`` (readers refuse a folder without a manifest)."""
    store.rm(MANIFEST)


def write_part(store: Store, table: pa.Table, index: int, writer: str = "0") -> PartInfo:
    data = table_to_parquet_bytes(table)
    name = f"part-{writer}-{index:05d}-{uuid.uuid4().hex[:8]}.parquet"
    store.write_bytes(data, name)
    return PartInfo(name, table.num_rows, hashlib.sha256(data).hexdigest(), len(data))


def commit(store: Store, parts: Iterable[PartInfo], extra: dict | None = None) -> dict:
    parts = sorted(parts, key=lambda p: p.path)
    manifest = {"format": PARTS_FORMAT, "rows": sum(p.rows for p in parts),
                "parts": [asdict(p) for p in parts], **(extra or {})}
    store.write_json(manifest, MANIFEST)
    keep = {p.path for p in parts}
    for stale in list_parts(store):
        if stale not in keep:
            store.rm(stale)
    return manifest


def read_manifest(store: Store) -> dict:
    if not store.exists(MANIFEST):
        raise StorageError(f"{store.url} has no {MANIFEST}: the output is incomplete or was never committed; "
                           "re-run the job that writes it")
    m = store.read_json(MANIFEST)
    if m.get("format") != PARTS_FORMAT or not isinstance(m.get("parts"), list):
        raise StorageError(f"{join(store.url, MANIFEST)}: not a {PARTS_FORMAT} manifest")
    return m


def read_committed(store: Store, columns: list[str] | None = None, verify: bool = True) -> pa.Table:
    """Read a committed folder, checking every listed part's checksum and row count."""
    m = read_manifest(store)
    tables = []
    for p in m["parts"]:
        data = store.read_bytes(p["path"])
        where = join(store.url, p["path"])
        if verify and hashlib.sha256(data).hexdigest() != p["sha256"]:
            raise StorageError(f"{where}: checksum does not match {MANIFEST}; the part was modified or truncated")
        t = read_parquet_bytes(data, where, columns)
        if t.num_rows != p["rows"]:
            raise StorageError(f"{where}: {t.num_rows} rows, manifest says {p['rows']}")
        tables.append(t)
    if not tables:
        return pa.table({})
    return pa.concat_tables(tables)


def pyarrow_filesystem(url: str, options: StorageOptions | None = None):
    """(path, pyarrow filesystem or None) for Ray Train's ``RunConfig(storage_path, storage_filesystem)``.

    Local paths go to Ray as absolute paths; remote URLs are wrapped from the same fsspec filesystem so Ray
    checkpoints use the same endpoint and credentials as every other byte ripple writes.
    """
    import os

    if _protocol(url) == "file":
        return os.path.abspath(url.removeprefix("file://")), None
    import pyarrow.fs as pafs

    fs, path = filesystem(url, options)
    return path, pafs.PyFileSystem(pafs.FSSpecHandler(fs))
