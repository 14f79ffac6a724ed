"""The one IO module: any fsspec URL -> filesystem, parquet read/write, atomic commits.

Every byte ripple reads or writes goes through here (rule: one filesystem module). Local paths need no
credentials; ``s3://`` takes an endpoint from ``StorageOptions`` (``--s3-endpoint-url``) and credentials from the
usual AWS variables, which are never logged or written anywhere.

Commit protocol for a folder of parts (embeddings, partitions):
  1. ``begin``: delete ``_manifest.json`` so readers refuse the folder while it is rewritten;
  2. ``write_part`` or ``PartWriter`` (any number of processes): each part is a uniquely named parquet file; its
     row count and sha256 are returned to the committer;
  3. ``commit``: write ``_manifest.json`` listing exactly the parts, then delete parts it does not list (and
     temp files a part writer killed mid-file left).
Readers read only the parts the manifest lists and check row counts and checksums, so a killed writer leaves
either the previous complete output or no readable output, never half of one.

Faults: an object store fails now and then (HTTP 5xx, 429/SlowDown throttling, timeouts, dropped connections).
Every ``Store`` operation is retried here, and only here (``with_retries``: exponential backoff with jitter,
``StorageOptions.retries`` / ``retry_backoff_s`` / ``timeout_s``, each retry logged at WARNING with the URL and
attempt). The filesystem ``Store.fs`` hands out for streaming (and ``pyarrow_filesystem`` for Ray Train) has
botocore retry its requests instead, with the same budget (and s3fs a body cut off mid-read). Permanent errors (403 access denied, no such bucket,
missing credentials) are never retried: they raise a ``StorageError`` naming the URL and what to do. When the
retries run out the error is ``StorageUnavailable`` (a runtime failure, CLI exit 1), or a ``StorageError`` saying
the endpoint cannot be reached when no connection could be made at all.

Secrets: credentials are never part of a URL (``check_url`` refuses ``s3://KEY:SECRET@bucket``), never a field
of ``StorageOptions``, hidden from its ``repr`` when ``storage.extra`` carries them, and left out of everything
written (``StorageOptions.without_secrets``).
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import posixpath
import random
import socket
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Callable, Iterable, Iterator, TypeVar

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

log = logging.getLogger(__name__)

MANIFEST = "_manifest.json"
PARTS_FORMAT = "ripple.parts/1"


class StorageError(ValueError):
    """A URL, file or manifest that cannot be used as asked; the message names it and says what to do."""


class WriteConflict(StorageError):
    """A conditional write (``Store.write_if``) found the object created, changed or removed by another writer."""


class StorageUnavailable(StorageError):
    """The storage service kept failing with errors that may pass (HTTP 5xx, throttling, timeouts, dropped
    connections) through every retry: a runtime failure (CLI exit 1), not bad input; a later run may succeed."""


T = TypeVar("T")

# ---------------------------------------------------------------- secrets

#: option names that hold credentials (fsspec, s3fs and botocore spellings); ``storage.extra`` may carry them for a
#: local run, but they are hidden from ``repr`` and never written (``StorageOptions.without_secrets``)
_SECRET_NAMES = {"key", "secret", "token", "username", "access_key", "secret_key", "session_token",
                 "aws_access_key_id", "aws_secret_access_key", "aws_session_token", "password", "passwd"}
_SECRET_WORDS = ("secret", "password", "passwd", "token", "credential")
#: schemes whose URL host is a bucket name, which can never hold ':' or '@'
_BUCKET_SCHEMES = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss"}


def is_secret_name(name: Any) -> bool:
    """Whether an option named ``name`` holds a credential (``key``, ``secret``, ``aws_session_token``, ...)."""
    n = str(name).lower()
    return n in _SECRET_NAMES or any(w in n for w in _SECRET_WORDS)


def _secret_paths(d: Any, where: str) -> list[str]:
    if not isinstance(d, dict):
        return []
    out = []
    for k, v in d.items():
        if is_secret_name(k):
            out.append(f"{where}.{k}")
        else:
            out += _secret_paths(v, f"{where}.{k}")
    return out


def _without_secrets(d: Any, mask: str | None = None) -> Any:
    """``d`` with credential-like keys dropped (``mask`` None) or their values replaced by ``mask``."""
    if not isinstance(d, dict):
        return d
    return {k: (mask if is_secret_name(k) else _without_secrets(v, mask)) for k, v in d.items()
            if mask is not None or not is_secret_name(k)}


def _credentials_end(url: str) -> int:
    """Index of the ``@`` that ends a ``user:secret@`` part of ``url``, or -1 when it has none."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return -1
    at = rest.find("@")
    if at < 0:
        return -1
    host = rest.split("/", 1)[0]
    if "@" in host:
        return len(scheme) + 3 + at
    # a secret with '/' in it (AWS secrets have them) splits the host early: s3://KEY:SE/CRET@bucket/...
    if ":" in host and (scheme.lower() in _BUCKET_SCHEMES or not host.rsplit(":", 1)[1].isdigit()):
        return len(scheme) + 3 + at
    return -1


def redact_url(url: str) -> str:
    """``url`` with any ``user:secret@`` part replaced by ``***@``: safe to log or print."""
    end = _credentials_end(url) if isinstance(url, str) else -1
    if end < 0:
        return url
    return url.split("://", 1)[0] + "://***" + url[end:]


def check_url(url: str | None, what: str = "URL") -> str | None:
    """``url`` unchanged, or a ``StorageError`` (which does not echo them) when it carries credentials."""
    if isinstance(url, str) and _credentials_end(url) >= 0:
        raise StorageError(f"{what}: the URL carries credentials (user:secret@), which would end up in logs, "
                           f"configs and manifests: use {redact_url(url).replace('://***@', '://')} and give the "
                           "credentials through AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, or an "
                           "instance role)")
    return url


# ---------------------------------------------------------------- options

@dataclass
class StorageOptions:
    """How to reach object storage, and how hard to try.

    Credentials are not fields: they come from the AWS environment variables (or a profile or instance role).
    ``extra`` may carry credential-like fsspec options for a local run (``key``/``secret`` of a MinIO): they are
    hidden from ``repr`` and left out of everything ripple writes (``without_secrets``).
    """

    endpoint_url: str | None = None
    anon: bool = False
    region: str | None = None
    #: Extra keyword arguments for the fsspec filesystem (non-secret settings only).
    extra: dict[str, Any] = field(default_factory=dict)
    #: retries of an operation that failed with an error that may pass (HTTP 5xx, 429 and SlowDown throttling,
    #: timeouts, dropped connections); permanent errors (403, 404, bad credentials) are never retried
    retries: int = 5
    #: wait before the first retry, in seconds; it doubles for each further one (at most 20 s), with jitter
    retry_backoff_s: float = 0.5
    #: seconds without an answer (or the next bytes of one) after which a request is abandoned (and retried)
    timeout_s: float = 60.0
    #: seconds to open a connection to the endpoint
    connect_timeout_s: float = 10.0

    def __post_init__(self):
        if not isinstance(self.retries, int) or isinstance(self.retries, bool) or self.retries < 0:
            raise StorageError(f"retries must be an integer >= 0, got {self.retries!r}")
        for name, low in (("retry_backoff_s", 0.0), ("timeout_s", None), ("connect_timeout_s", None)):
            v = getattr(self, name)
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and (v >= low if low is not None else v > 0)
            if not ok:
                raise StorageError(f"{name} must be a number {'>= 0' if low is not None else '> 0'} (seconds), "
                                   f"got {v!r}")
        if not isinstance(self.extra, dict):
            raise StorageError(f"extra must be a mapping of fsspec options, got {type(self.extra).__name__}")
        check_url(self.endpoint_url, "storage.endpoint_url (--s3-endpoint-url)")

    def __repr__(self) -> str:
        shown = {f.name: getattr(self, f.name) for f in fields(self)}
        shown["extra"] = _without_secrets(self.extra, mask="<redacted>")
        return f"StorageOptions({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

    def secret_keys(self) -> list[str]:
        """Dotted names of the credential-like options in ``extra`` (``storage.extra.key``, ...)."""
        return _secret_paths(self.extra, "storage.extra")

    def without_secrets(self) -> "StorageOptions":
        """A copy without credential-like ``extra`` options: what configs and manifests may carry."""
        dropped = self.secret_keys()
        if not dropped:
            return self
        log.warning("not writing %s: credentials are never written to configs or storage; where the run is read "
                    "back they come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY", ", ".join(dropped))
        return replace(self, extra=_without_secrets(self.extra))

    def for_protocol(self, protocol: str, transport_retries: bool = True) -> dict[str, Any]:
        """fsspec keyword arguments for ``protocol``.

        On S3: the endpoint, region and timeouts; no listing cache (another process may have written since);
        botocore retrying transient errors itself (standard mode, ``retries`` + 1 attempts) when
        ``transport_retries``, else one attempt per call (``Store`` retries its own operations, so that no request
        is retried by two layers at once). ``extra`` overrides any of these, except the retries of a
        ``transport_retries=False`` filesystem.
        """
        if protocol not in ("s3", "s3a"):
            return dict(self.extra)
        opts: dict[str, Any] = {"anon": self.anon, "use_listings_cache": False, **self.extra}
        client_kwargs = dict(opts.pop("client_kwargs", {}))
        if self.endpoint_url:
            client_kwargs["endpoint_url"] = self.endpoint_url
        if self.region:
            client_kwargs["region_name"] = self.region
        if client_kwargs:
            opts["client_kwargs"] = client_kwargs
        config = {"connect_timeout": self.connect_timeout_s, "read_timeout": self.timeout_s,
                  "retries": {"mode": "standard", "total_max_attempts": self.retries + 1}}
        config.update(opts.pop("config_kwargs", None) or {})
        if not transport_retries:
            config["retries"] = {"mode": "standard", "total_max_attempts": 1}
        opts["config_kwargs"] = config
        return opts


def _protocol(url: str) -> str:
    return url.split("://", 1)[0] if "://" in url else "file"


def filesystem(url: str, options: StorageOptions | None = None, *,
               transport_retries: bool = True) -> tuple[fsspec.AbstractFileSystem, str]:
    """``fsspec.core.url_to_fs`` with ripple's options; returns (filesystem, path inside it).

    ``transport_retries=False``: neither botocore nor s3fs retries a failed request (for ``Store``'s operations,
    which ``with_retries`` retries).
    """
    options = options or StorageOptions()
    check_url(url, "storage URL")
    protocol = _protocol(url)
    try:
        fs, path = fsspec.core.url_to_fs(url, **options.for_protocol(protocol, transport_retries))
    except (ImportError, ValueError, OSError) as e:
        raise StorageError(f"cannot open storage URL {url!r}: {e}. Use a local path or s3://bucket/prefix.") from e
    if not transport_retries and protocol in ("s3", "s3a"):
        fs.retries = 1  # s3fs's own retry loop (SlowDown, timeouts, truncated bodies): one attempt
    return fs, path


# ---------------------------------------------------------------- retries

_BACKOFF_CAP_S = 20.0
_sleep = time.sleep  # tests replace it to run without waiting

#: error codes of an answer that may change if the request is repeated (throttling, timeouts, server faults)
_TRANSIENT_CODES = {"SlowDown", "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottled",
                    "RequestThrottledException", "TooManyRequestsException", "TooManyRequests", "RequestLimitExceeded",
                    "BandwidthLimitExceeded", "EC2ThrottledException", "ProvisionedThroughputExceededException",
                    "PriorRequestNotComplete", "TransactionInProgressException", "RequestTimeout",
                    "RequestTimeoutException", "InternalError", "ServiceUnavailable", "OperationAborted"}
_DENIED_CODES = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
                 "TokenRefreshRequired", "AllAccessDisabled", "AccountProblem", "InvalidSecurity",
                 "AuthorizationHeaderMalformed", "UnauthorizedAccess", "Forbidden"}


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    """``exc`` and the exceptions it was raised from (as a traceback shows them)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ if exc.__cause__ is not None else (None if exc.__suppress_context__ else exc.__context__)


def _service_answer(e: BaseException) -> tuple[int, str, str] | None:
    """(HTTP status, error code, message) of a botocore ``ClientError``; None for any other exception."""
    resp = getattr(e, "response", None)
    if not isinstance(resp, dict) or not ({"Error", "ResponseMetadata"} & resp.keys()):
        return None
    err, meta = resp.get("Error") or {}, resp.get("ResponseMetadata") or {}
    return int(meta.get("HTTPStatusCode") or 0), str(err.get("Code") or ""), str(err.get("Message") or "")


def _transient_types() -> tuple[type, ...]:
    import http.client

    types: list[type] = [TimeoutError, ConnectionError, http.client.IncompleteRead]  # TimeoutError: asyncio's too
    with contextlib.suppress(ImportError):
        from botocore.exceptions import ConnectionError as BotoConnectionError
        from botocore.exceptions import HTTPClientError, IncompleteReadError
        from botocore.parsers import ResponseParserError  # throttling answers with broken XML (s3fs#484)

        types += [BotoConnectionError, HTTPClientError, IncompleteReadError, ResponseParserError]
    with contextlib.suppress(ImportError):
        import aiohttp

        types += [aiohttp.ClientPayloadError, aiohttp.ClientConnectionError]
    return tuple(types)


def _unknown_host(e: BaseException) -> bool:
    return isinstance(e, socket.gaierror) and e.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", None))


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` may pass if the request is repeated: HTTP 5xx, 408, 429 and throttling codes (SlowDown),
    timeouts, connections refused, reset or closed early, truncated bodies. Everything else is permanent: 403 and
    bad credentials, 404 and missing buckets, unknown hosts, bad arguments, local disk errors."""
    chain = list(_chain(exc))
    if any(_unknown_host(e) for e in chain):
        return False
    transient = _transient_types()
    for e in chain:
        answer = _service_answer(e)
        if answer is not None:  # the service answered: its status and code decide
            status, code, _ = answer
            return code in _TRANSIENT_CODES or status in (408, 429) or status >= 500
        if isinstance(e, transient):
            return True
    return False


def _unreachable(e: BaseException) -> bool:
    """No connection could be made at all (refused, unknown host, connect timeout), as opposed to a service that
    answered, or a connection that broke later."""
    for x in _chain(e):
        if isinstance(x, (ConnectionRefusedError, socket.gaierror)):
            return True
        with contextlib.suppress(ImportError):
            from botocore.exceptions import EndpointConnectionError

            if isinstance(x, EndpointConnectionError):  # ConnectTimeoutError is one too
                return True
    return False


def _describe(e: BaseException) -> str:
    """One line on what went wrong: the service's error code and status, or the exception type and message."""
    for x in _chain(e):
        answer = _service_answer(x)
        if answer is not None:
            status, code, _ = answer
            return f"{code or 'error'} (HTTP {status})" if code != str(status) else f"HTTP {status}"
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}"[:300] if text else type(e).__name__


def backoff_s(retry: int, base: float) -> float:
    """Seconds to wait before retry number ``retry`` (1, 2, ...): ``base * 2**(retry - 1)``, at most 20 s, half of
    it random ("equal jitter"), so that workers failing together do not retry in lockstep."""
    full = min(_BACKOFF_CAP_S, base * 2 ** (retry - 1))
    return full / 2 + random.uniform(0, full / 2)


def _permanent_error(op: str, url: str, e: BaseException, options: StorageOptions) -> StorageError | None:
    """A ``StorageError`` naming ``url`` and what to do for a permanent failure; None: raise ``e`` unchanged
    (a missing object's ``FileNotFoundError``, a local error, a bug)."""
    for x in _chain(e):
        answer = _service_answer(x)
        if answer is None:
            if type(x).__name__ in ("NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"):
                return StorageError(f"{op} {url}: no usable AWS credentials ({type(x).__name__}); set "
                                    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, or an instance "
                                    "role), or storage.anon: true for a public bucket")
            if _unknown_host(x):
                return _cannot_reach(url, e, options, "")
            continue
        status, code, message = answer
        if status == 403 or code in _DENIED_CODES:
            return StorageError(f"{op} {url}: access denied ({_describe(x)}); check that the credentials ripple "
                                "runs with (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, a profile or an instance role) "
                                "are valid and allowed to do this on the bucket, and that the endpoint is right")
        if code == "NoSuchBucket":
            return StorageError(f"{op} {url}: the bucket does not exist (NoSuchBucket); create it, or fix the bucket "
                                "name or the endpoint (--s3-endpoint-url)")
        if status == 404 or code in ("NoSuchKey", "NotFound"):
            return None  # FileNotFoundError: each operation says what a missing object means for it
        detail = " ".join(message.split())[:200]
        return StorageError(f"{op} {url} failed: {_describe(x)}{': ' + detail if detail else ''}")
    return None


def _cannot_reach(url: str, e: BaseException, options: StorageOptions, tries: str) -> StorageError:
    where = f"{url} (endpoint {options.endpoint_url})" if options.endpoint_url else url
    return StorageError(f"cannot reach {where}: {_describe(e)}{tries}; check the URL, the endpoint "
                        "(--s3-endpoint-url) and the network")


def _precondition_failed(e: BaseException) -> bool:
    """A conditional request the store refused: the object exists (create) or is at another version (HTTP 412)."""
    if isinstance(e, FileExistsError):
        return True
    for x in _chain(e):
        answer = _service_answer(x)
        if answer and (answer[0] == 412 or answer[1] == "PreconditionFailed"):
            return True
    return "pre-conditions you specified did not hold" in str(e)  # s3fs's translation of a 412


def _no_such_bucket(e: BaseException) -> bool:
    return any((_service_answer(x) or (0, "", ""))[1] == "NoSuchBucket" for x in _chain(e))


def with_retries(op: str, url: str, fn: Callable[[], T], options: StorageOptions) -> T:
    """``fn()``, one storage operation (``op``: read, write, ...) on ``url``, retried while it fails with an error
    that may pass (``is_transient``): at most ``options.retries`` times, waiting ``backoff_s`` before each, each
    retry logged at WARNING with the URL and the attempt number.

    Permanent failures raise at once: the service's (access denied, no such bucket, ...) as a ``StorageError``
    naming ``url`` and what to do, others unchanged (``FileNotFoundError`` of a missing object). When the retries
    run out: ``StorageError`` "cannot reach" if no connection could ever be made, else ``StorageUnavailable``.
    """
    attempts = options.retries + 1
    attempt = 1
    while True:
        try:
            return fn()
        except StorageError:
            raise
        except Exception as e:
            if not is_transient(e):
                err = _permanent_error(op, url, e, options)
                if err is None:
                    raise
                raise err from e
            if attempt >= attempts:
                tries = f"; gave up after {attempts} attempt{'s' if attempts != 1 else ''}"
                if _unreachable(e):
                    raise _cannot_reach(url, e, options, tries) from e
                raise StorageUnavailable(f"{op} {url}: {_describe(e)}{tries}; the storage service is unavailable or "
                                         "throttling: run again later, or allow more with storage.retries / "
                                         "storage.timeout_s") from e
            delay = backoff_s(attempt, options.retry_backoff_s)
            log.warning("storage: %s %s failed (attempt %d of %d): %s; retrying in %.2fs", op, url, attempt,
                        attempts, _describe(e), delay)
            _sleep(delay)
            attempt += 1


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
    """A root URL plus its filesystem; the handle every component passes around.

    Its operations (``exists``, ``ls``, ``read_bytes``, ``write_bytes``, ``put_file``, ``rm``, JSON) retry
    transient failures of a remote store (``with_retries``). ``fs`` is for callers that stream through the
    filesystem themselves (``fs.open`` + ``pq.ParquetFile``): on S3 botocore retries its requests.
    """

    def __init__(self, url: str, options: StorageOptions | None = None):
        self.url = url.rstrip("/") if url not in ("/",) else url
        self.options = options or StorageOptions()
        self.remote = _protocol(self.url) != "file"
        self.fs, self.root = filesystem(self.url, self.options)
        # this class's own operations: one attempt per call below with_retries (a second layer would multiply)
        self._fs = filesystem(self.url, self.options, transport_retries=False)[0] if self.remote else self.fs
        if self.remote:  # fsspec shares instances: never trust a listing another writer cached
            self.fs.invalidate_cache()
            self._fs.invalidate_cache()

    def __reduce__(self):  # filesystems hold sockets; ship the URL and reopen
        return (Store, (self.url, self.options))

    def child(self, *parts: str) -> "Store":
        return Store(join(self.url, *parts), self.options)

    def path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts) if parts else self.root

    def _do(self, op: str, parts: tuple[str, ...], fn: Callable[[str], T]) -> T:
        """``fn(path of parts)``; on a remote store retried by ``with_retries``."""
        p = self.path(*parts)
        if not self.remote:
            return fn(p)
        return with_retries(op, join(self.url, *parts), lambda: fn(p), self.options)

    def exists(self, *parts: str) -> bool:
        return self._do("check", parts, self._fs.exists)

    def ls(self, *parts: str) -> list[str]:
        def ls(p: str) -> list[str]:
            try:
                return self._fs.ls(p, detail=False)
            except (FileNotFoundError, NotADirectoryError) as e:
                if _no_such_bucket(e):
                    raise
                return []

        return sorted(posixpath.basename(x.rstrip("/")) for x in self._do("list", parts, ls))

    def makedirs(self, *parts: str) -> None:
        """Create a local folder; a no-op on object stores, which have no folders."""
        if not self.remote:
            self.fs.makedirs(self.path(*parts), exist_ok=True)

    def read_bytes(self, *parts: str) -> bytes:
        try:
            return self._do("read", parts, self._fs.cat_file)
        except FileNotFoundError as e:
            raise StorageError(f"{join(self.url, *parts)} does not exist") from e

    def write_bytes(self, data: bytes, *parts: str) -> None:
        """Write a whole object. On S3 a PUT is atomic; locally write a temp file and rename it into place."""
        p = self.path(*parts)
        if _protocol(self.url) == "file" or self.fs.protocol in ("file", ("file", "local")):
            parent = posixpath.dirname(p)
            if parent:
                self.fs.makedirs(parent, exist_ok=True)
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
            self._do("write", parts, lambda q: self._fs.pipe_file(q, data))

    # -- conditional writes: what one writer per run (``ripple.lease``) is built on. S3: one request that the store
    # checks (PUT with If-None-Match: * / If-Match: <ETag>, DELETE with If-Match), so two writers cannot both win
    # on any S3 that implements them (AWS since 2024; moto's server). Local disk: a create is a hard link of a
    # written temp file (fails if the name exists); a replace or delete compares the content's digest under an
    # exclusive flock of ``<path>.lock``, which serializes writers on one host's filesystem (not NFS).

    def read_versioned(self, *parts: str) -> tuple[bytes, str] | None:
        """(the object's bytes, its version for ``write_if``), or None when it does not exist."""
        p = self.path(*parts)
        if not self.remote:
            try:
                with open(p, "rb") as f:
                    data = f.read()
            except FileNotFoundError:
                return None
            return data, hashlib.sha256(data).hexdigest()
        bucket, key = self._bucket_key(p)

        def get():
            try:
                head = self._fs.call_s3("head_object", Bucket=bucket, Key=key)
                data = self._fs.cat_file(p)
                again = self._fs.call_s3("head_object", Bucket=bucket, Key=key)
            except FileNotFoundError:
                return None
            return (data, head["ETag"]) if head["ETag"] == again["ETag"] else get()  # changed while read: again

        return self._do("read", parts, lambda _: get())

    def write_if(self, data: bytes, *parts: str, version: str | None) -> str:
        """Write ``data`` only if the object does not exist (``version`` None) or is still at ``version``; returns
        the new version. ``WriteConflict`` when another writer got there first."""
        p = self.path(*parts)
        where = join(self.url, *parts)
        if not self.remote:
            return self._local_write_if(data, p, version, where)
        bucket, key = self._bucket_key(p)
        cond = {"IfNoneMatch": "*"} if version is None else {"IfMatch": version}

        def put():
            try:
                return self._fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data, **cond)["ETag"]
            except Exception as e:  # noqa: BLE001 - a refused condition is an answer, not a failure to retry
                if _precondition_failed(e) or (version is not None and isinstance(e, FileNotFoundError)):
                    return None
                raise

        out = self._do("write", parts, lambda _: put())
        if out is None:
            raise WriteConflict(f"{where} was {'created' if version is None else 'changed'} by another writer")
        return out

    def rm_if(self, version: str, *parts: str) -> None:
        """Delete the object only if it is still at ``version`` (``WriteConflict`` otherwise)."""
        p = self.path(*parts)
        where = join(self.url, *parts)
        if not self.remote:
            with self._local_lock(p):
                cur = self.read_versioned(*parts)
                if cur is None or cur[1] != version:
                    raise WriteConflict(f"{where} was changed by another writer")
                os.remove(p)
            return
        bucket, key = self._bucket_key(p)

        def delete():
            try:
                self._fs.call_s3("delete_object", Bucket=bucket, Key=key, IfMatch=version)
                return True
            except Exception as e:  # noqa: BLE001
                if _precondition_failed(e):
                    return False
                raise

        if not self._do("delete", parts, lambda _: delete()):
            raise WriteConflict(f"{where} was changed by another writer")
        self._fs.invalidate_cache(p)

    def _bucket_key(self, p: str) -> tuple[str, str]:
        bucket, _, key = p.partition("/")
        return bucket, key

    @contextlib.contextmanager
    def _local_lock(self, p: str):
        import fcntl

        os.makedirs(os.path.dirname(p) or ".", exist_ok=True)
        with open(f"{p}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _local_write_if(self, data: bytes, p: str, version: str | None, where: str) -> str:
        tmp = f"{p}.tmp-{uuid.uuid4().hex[:8]}"
        os.makedirs(os.path.dirname(p) or ".", exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            with self._local_lock(p):
                if version is None:
                    try:
                        os.link(tmp, p)  # atomic: fails if the name exists
                    except FileExistsError:
                        raise WriteConflict(f"{where} was created by another writer") from None
                else:
                    try:
                        with open(p, "rb") as f:
                            current = hashlib.sha256(f.read()).hexdigest()
                    except FileNotFoundError:
                        current = None
                    if current != version:
                        raise WriteConflict(f"{where} was {'removed' if current is None else 'changed'} by another "
                                            "writer")
                    os.replace(tmp, p)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)
        return hashlib.sha256(data).hexdigest()

    def put_file(self, local_path: str, *parts: str) -> None:
        """Upload a local file without reading it into memory (multipart on S3; temp + rename locally)."""
        p = self.path(*parts)
        if _protocol(self.url) == "file":
            import shutil

            parent = posixpath.dirname(p)
            if parent:
                self.fs.makedirs(parent, exist_ok=True)
            tmp = f"{p}.tmp-{uuid.uuid4().hex[:8]}"
            shutil.copyfile(local_path, tmp)
            self.fs.mv(tmp, p)
        else:
            self._do("upload", parts, lambda q: self._fs.put_file(local_path, q))

    def read_json(self, *parts: str) -> dict:
        raw = self.read_bytes(*parts)
        try:
            return json.loads(raw)
        except json.JSONDecodeError as e:
            raise StorageError(f"{join(self.url, *parts)} is not valid JSON ({e}); rewrite it or remove it") from e

    def write_json(self, obj: Any, *parts: str) -> None:
        self.write_bytes(json.dumps(obj, indent=2, sort_keys=True).encode(), *parts)

    def rm(self, *parts: str, recursive: bool = False) -> None:
        """Delete a file (or a folder with ``recursive``); nothing to delete is fine."""
        def rm(p: str) -> None:
            try:
                self._fs.rm(p, recursive=recursive)
            except FileNotFoundError as e:
                if _no_such_bucket(e):
                    raise

        self._do("delete", parts, rm)


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
    return concat_parts(tables, files, f"table {name!r} ({join(store.url, name)})")


def concat_parts(tables: list[pa.Table], names: list[str], where: str) -> pa.Table:
    """Concatenate the parts of one table; parts that disagree on a column are refused naming it, both types
    and both part files (e.g. embeddings of different widths from two runs)."""
    try:
        return pa.concat_tables(tables, promote_options="none")
    except pa.ArrowInvalid as e:
        first = tables[0].schema
        for name, t in zip(names[1:], tables[1:]):
            for f in first:
                i = t.schema.get_field_index(f.name)
                if i < 0 or not t.schema.field(i).type.equals(f.type):
                    found = t.schema.field(i).type if i >= 0 else "missing"
                    raise StorageError(f"{where}: parts disagree on column {f.name!r}: {f.type} in {names[0]}, "
                                       f"{found} in {name}; the parts come from different writes: re-run the "
                                       "write") from e
        raise StorageError(f"{where}: parts disagree on schema ({' '.join(str(e).split())})") from e


def iter_table_batches(store: Store, name: str, columns: list[str] | None = None,
                       batch_rows: int = 1 << 20) -> Iterator[pa.RecordBatch]:
    """Stream a table folder in bounded record batches (partitioner and loaders at scale)."""
    for f in list_parts(store, name):
        with store.fs.open(store.path(name, f), "rb") as fh:
            pf = pq.ParquetFile(fh)
            yield from pf.iter_batches(batch_size=batch_rows, columns=columns)


# ---------------------------------------------------------------- text sources (``ripple import``)

class _Hashing(io.RawIOBase):
    """A binary file read through, counting and hashing the bytes exactly as they are stored."""

    def __init__(self, f):
        self.f, self.sha, self.bytes = f, hashlib.sha256(), 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        data = self.f.read(len(b))
        n = len(data)
        b[:n] = data
        self.sha.update(data)
        self.bytes += n
        return n

    def drain(self) -> None:
        """Hash the rest of the stored bytes (what the text reader did not need: a gzip member's trailer)."""
        for block in iter(lambda: self.f.read(1 << 20), b""):
            self.sha.update(block)
            self.bytes += len(block)


class TextSource:
    """A text file at any fsspec URL, read once as numbered lines: gzip is recognised by its magic bytes (not
    its name), and the sha256 and size of the stored bytes are known once the lines have been read to the end.

    ``with TextSource(url) as src: for lineno, line in src.lines(): ...`` then ``src.sha256``. Bytes that are not
    UTF-8 are replaced (the line then fails its parser with its number), never a decode traceback."""

    def __init__(self, url: str, options: StorageOptions | None = None):
        self.url = url
        self.name = posixpath.basename(url.rstrip("/"))
        fs, path = filesystem(url, options)
        try:
            if fs.isdir(path):
                raise StorageError(f"{redact_url(url)} is a folder; pass the file itself")
            self._raw = fs.open(path, "rb")
        except FileNotFoundError as e:
            raise StorageError(f"{redact_url(url)} does not exist; check the path") from e
        self._hashing = _Hashing(self._raw)
        buffered = io.BufferedReader(self._hashing, 1 << 20)
        self.gzip = buffered.peek(2)[:2] == b"\x1f\x8b"
        import gzip

        stream = gzip.GzipFile(fileobj=buffered, mode="rb") if self.gzip else buffered
        self._text = io.TextIOWrapper(stream, encoding="utf-8", errors="replace", newline=None)

    def lines(self) -> Iterator[tuple[int, str]]:
        """(1-based line number, line without its end) for every line; then the rest of the stored bytes are
        hashed (a gzip member's trailer)."""
        import gzip
        import zlib

        lineno = 0
        try:
            for lineno, line in enumerate(self._text, 1):
                yield lineno, line.rstrip("\r\n")
        except (EOFError, OSError, zlib.error, gzip.BadGzipFile) as e:
            raise StorageError(f"{redact_url(self.url)} line {lineno + 1}: the gzip stream is corrupt or cut "
                               f"short ({e}); download the file again") from e
        self._hashing.drain()

    @property
    def sha256(self) -> str:
        return self._hashing.sha.hexdigest()

    @property
    def size(self) -> int:
        return self._hashing.bytes

    def __enter__(self) -> "TextSource":
        return self

    def __exit__(self, *exc) -> None:
        self._raw.close()


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


def file_sha256(path: str) -> str:
    """sha256 of a local file, read in blocks (a part is never read into memory whole to be hashed)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


class PartWriter:
    """One part of a committed folder, written a batch at a time: ``write`` buffers tables up to
    ``row_group_rows`` rows and writes them as a parquet row group to a spool file; ``close`` publishes it under
    its final name and returns its ``PartInfo``. What the writer holds is a row group, not the part (a part of
    millions of embeddings held whole, next to its parquet bytes, was a layer-wise worker's largest allocation).

    The spool file sits next to the part on a local store (published by a rename) and in the temp dir for a
    remote one (uploaded by ``Store.put_file``: multipart, never read back into memory). A writer that fails
    removes its spool file; one killed mid-part leaves ``<part>.tmp-*``, which ``commit`` deletes.
    """

    def __init__(self, store: Store, schema: pa.Schema, index: int, writer: str = "0",
                 row_group_rows: int = 1 << 16):
        self.store, self.row_group_rows = store, row_group_rows
        self.name = f"part-{writer}-{index:05d}-{uuid.uuid4().hex[:8]}.parquet"
        if store.remote:
            fd, self._spool = tempfile.mkstemp(prefix="ripple-part-", suffix=".parquet")
            os.close(fd)
        else:
            store.makedirs()
            self._spool = store.path(f"{self.name}.tmp-{uuid.uuid4().hex[:8]}")
        self._writer = pq.ParquetWriter(self._spool, schema, compression="zstd")
        self._buf: list[pa.Table] = []
        self._buffered = self.rows = 0

    def write(self, table: pa.Table) -> None:
        self._buf.append(table)
        self._buffered += table.num_rows
        if self._buffered >= self.row_group_rows:
            self._flush()

    def _flush(self) -> None:
        if self._buf:
            group = pa.concat_tables(self._buf).combine_chunks()
            self._writer.write_table(group, row_group_size=max(1, min(self._buffered, 1 << 20)))
            self.rows += self._buffered
            self._buf, self._buffered = [], 0

    def close(self) -> PartInfo:
        self._flush()
        self._writer.close()
        info = PartInfo(self.name, self.rows, file_sha256(self._spool), os.path.getsize(self._spool))
        if self.store.remote:
            self.store.put_file(self._spool, self.name)
            os.remove(self._spool)
        else:
            os.replace(self._spool, self.store.path(self.name))
        return info

    def __enter__(self) -> "PartWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:  # the part is abandoned: no spool file is left behind
            with contextlib.suppress(Exception):
                self._writer.close()
            with contextlib.suppress(OSError):
                os.remove(self._spool)


def write_part(store: Store, table: pa.Table, index: int, writer: str = "0") -> PartInfo:
    """``table`` as one part (one row group up to 1Mi rows); ``PartWriter`` writes a part batch by batch."""
    with PartWriter(store, table.schema, index, writer, row_group_rows=max(1, table.num_rows)) as w:
        w.write(table)
        return w.close()


def commit(store: Store, parts: Iterable[PartInfo], extra: dict | None = None) -> dict:
    parts = sorted(parts, key=lambda p: p.path)
    manifest = {"format": PARTS_FORMAT, "rows": sum(p.rows for p in parts),
                "parts": [asdict(p) for p in parts], **(extra or {})}
    store.write_json(manifest, MANIFEST)
    keep = {p.path for p in parts}
    for name in store.ls():  # parts of earlier writes, and temp files of part writes killed mid-file
        if name.startswith("part-") and name not in keep and (name.endswith(".parquet") or ".parquet.tmp-" in name):
            store.rm(name)
    return manifest


def read_manifest(store: Store) -> dict:
    if not store.exists(MANIFEST):
        raise StorageError(f"{store.url} has no {MANIFEST}: the output is incomplete or was never committed; "
                           "re-run the job that writes it")
    m = store.read_json(MANIFEST)
    if m.get("format") != PARTS_FORMAT or not isinstance(m.get("parts"), list):
        raise StorageError(f"{join(store.url, MANIFEST)}: not a {PARTS_FORMAT} manifest")
    return m


def read_checked(store: Store, entry: dict, manifest: str, columns: list[str] | None = None, verify: bool = True,
                 fix: str = "re-run the job that wrote it") -> pa.Table:
    """One file a manifest lists (``entry``: its ``path``, ``sha256`` and ``rows``), checked against both: a
    modified, truncated or half-written file is refused with ``fix``. ``verify=False`` skips the checksum (a
    second pass over files already verified)."""
    data = verified_bytes(store, entry, manifest, verify, fix)
    where = join(store.url, entry["path"])
    t = read_parquet_bytes(data, where, columns)
    if t.num_rows != entry["rows"]:
        raise StorageError(f"{where}: {t.num_rows} rows, {manifest} says {entry['rows']} — {fix}")
    return t


def verified_bytes(store: Store, entry: dict, manifest: str, verify: bool = True,
                   fix: str = "re-run the job that wrote it") -> bytes:
    """The bytes of one file a manifest lists, checked against its ``sha256`` (``read_checked`` decodes them
    whole; a reader that decodes a large column batch by batch starts here)."""
    data = store.read_bytes(entry["path"])
    if verify and hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise StorageError(f"{join(store.url, entry['path'])}: checksum does not match {manifest}; the file was "
                           f"modified or truncated — {fix}")
    return data


def iter_committed(store: Store, columns: list[str] | None = None, verify: bool = True) -> Iterator[pa.Table]:
    """The parts of a committed folder one at a time, each checked against the manifest."""
    for p in read_manifest(store)["parts"]:
        yield read_checked(store, p, MANIFEST, columns, verify)


def read_committed(store: Store, columns: list[str] | None = None, verify: bool = True) -> pa.Table:
    """Read a committed folder, checking every listed part's checksum and row count."""
    names = [p["path"] for p in read_manifest(store)["parts"]]
    tables = list(iter_committed(store, columns, verify))
    if not tables:
        return pa.table({})
    return concat_parts(tables, names, store.url)


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
