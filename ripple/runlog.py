"""A run's logs, under ``<run>/logs/``: ripple's own records and Ray's.

    <run>/logs/ripple.log   every record of this process at INFO and above: ripple's and the Ray driver's
               ray/         the Ray session's log folder (raylet, GCS, Ray Train's controller, every worker's
                            stdout/stderr with the ranks' ripple records), copied when the run ends, for a
                            session whose logs live on this machine (a cluster on another machine keeps its own:
                            ``ray logs`` or the dashboard)

While a run works, the console shows only what ``ripple.console`` prints and warnings; ``verbose`` (``-v``)
shows these logs live as well (Ray forwards its workers' output to the driver then).
"""
from __future__ import annotations

import logging
import os
import tempfile

from ripple.data.storage import StorageError, Store, join

log = logging.getLogger(__name__)

LOGS = "logs"
RIPPLE_LOG = "ripple.log"
RAY_LOGS = "ray"
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: Ray's session files that are not logs, or grow without bound
_SKIP_SUFFIXES = (".sock", ".lock")
_MAX_FILE_BYTES = 64 << 20


def ray_session_logs_dir() -> str | None:
    """The local folder of the connected Ray session's logs, or None (not connected, or not on this machine).

    Ray has no public API for it; its ``Node`` object is the one place that knows."""
    try:
        import ray._private.worker as ray_worker

        node = ray_worker._global_node
        path = node.get_logs_dir_path() if node is not None else None
    except (ImportError, AttributeError):
        return None
    return path if path and os.path.isdir(path) else None


def copy_tree(src: str, store: Store, *prefix: str) -> int:
    """Copy every regular file under ``src`` to ``store`` under ``prefix``; returns the number copied. A file
    that vanishes while copying (Ray rotates its logs) is skipped."""
    copied = 0
    for root, _, files in os.walk(src):
        for name in files:
            path = os.path.join(root, name)
            if name.endswith(_SKIP_SUFFIXES) or not os.path.isfile(path) or os.path.getsize(path) > _MAX_FILE_BYTES:
                continue
            rel = os.path.relpath(path, src).replace(os.sep, "/")
            try:
                store.put_file(path, *prefix, rel)
            except FileNotFoundError:
                continue
            copied += 1
    return copied


class _Forward(logging.Handler):
    """Hands records to another handler, which formats them its own way."""

    def __init__(self, target: logging.Handler):
        super().__init__(logging.INFO)
        self.target = target

    def emit(self, record: logging.LogRecord) -> None:
        self.target.handle(record)


class RunLogs:
    """``with RunLogs(run_url, options, verbose):`` routes this process's log records to ``<run>/logs/`` for the
    block, and on leaving it (success or failure) copies the Ray session's logs there too."""

    def __init__(self, run_url: str, options=None, verbose: bool = False):
        self.store = Store(run_url, options)
        self.verbose = verbose
        self.where = join(run_url, LOGS)

    def __enter__(self) -> "RunLogs":
        if not self.store.remote:  # tail -f works on a local run's log while it trains
            self.store.makedirs(LOGS)
            self._path, self._upload = self.store.path(LOGS, RIPPLE_LOG), False
        else:
            fd, self._path = tempfile.mkstemp(prefix="ripple-", suffix=".log")
            os.close(fd)
            self._upload = True
        self._handler = logging.FileHandler(self._path, mode="a")
        self._handler.setLevel(logging.INFO)
        self._handler.setFormatter(logging.Formatter(_FORMAT))
        # Ray's driver-side loggers print through their own handlers and do not propagate to the root logger;
        # ray.init re-formats every handler of the "ray" logger, so that one gets a forwarder to the file's
        self._loggers = [logging.getLogger(), logging.getLogger("ray")]
        self._attached = [self._handler, _Forward(self._handler)]
        self._levels = [lg.level for lg in self._loggers]
        for lg, h in zip(self._loggers, self._attached):
            lg.addHandler(h)
            if lg.getEffectiveLevel() > logging.INFO:
                lg.setLevel(logging.INFO)
        self._quieted = []
        if not self.verbose:  # Ray's own console handlers show only errors; the file has the rest
            import ray  # noqa: F401  (importing Ray installs its handlers on the "ray" logger)

            for h in logging.getLogger("ray").handlers:
                if h not in self._attached and isinstance(h, logging.StreamHandler) and h.level < logging.ERROR:
                    self._quieted.append((h, h.level))
                    h.setLevel(logging.ERROR)
        log.info("logs of this run go to %s", self.where)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is not None:  # the traceback goes to the file only: the console says one error line
            self._handler.handle(logging.LogRecord("ripple", logging.ERROR, __file__, 0, "the run failed", None,
                                                   (exc_type, exc, tb)))
        for lg, h, level in zip(self._loggers, self._attached, self._levels):
            lg.removeHandler(h)
            lg.setLevel(level)
        for h, level in self._quieted:
            h.setLevel(level)
        self._handler.close()
        try:
            if self._upload:
                self.store.put_file(self._path, LOGS, RIPPLE_LOG)
            session = ray_session_logs_dir()
            if session is not None:
                copy_tree(session, self.store, LOGS, RAY_LOGS)
        except (OSError, StorageError) as e:  # the logs must never turn a finished run into a failed one
            log.warning("could not copy the run's logs to %s: %s", self.where, e)
        finally:
            if self._upload:
                os.remove(self._path)
