"""One writer per run: a lease in the run folder (``<run>/_lease.json``) that ``ripple train`` and ``ripple embed``
hold while they write there.

The lease names its holder (host, pid, command), when it was taken and its last heartbeat; a thread renews the
heartbeat every ``ttl / 4``. Every change is a conditional write of the storage module (``Store.write_if``: S3's
If-None-Match / If-Match on one request; on local disk an atomic link, or a compare under a file lock), so two
processes can never both hold it:

- taking a free run: create the lease only if it does not exist;
- a run that is held: refused (``LeaseHeld``, exit 2), naming the holder and how to take over;
- a lease whose holder is gone: its heartbeat is older than the TTL, or it is on this host and its process no
  longer exists. It is replaced only if it is still the version that was judged stale, so of two takers one wins.
  This is how a run whose driver was killed is resumed: the same command again, after the TTL (at once on the
  same host).
- heartbeat and release: only while the lease is still the version this holder last wrote; a holder that finds it
  replaced has lost the lease and says so (a paused holder whose lease expired must not go on as if it held it).
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from datetime import datetime, timezone

from ripple.data.storage import StorageOptions, Store, WriteConflict, redact_url

log = logging.getLogger(__name__)

LEASE_FILE = "_lease.json"


class LeaseHeld(ValueError):
    """The run is held by another live writer."""


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


class RunLease:
    """``with RunLease(run_url, options, ttl_s, "ripple train"):`` holds the run for the block."""

    def __init__(self, run_url: str, options: StorageOptions | None, ttl_s: float, command: str):
        if ttl_s <= 0:
            raise ValueError(f"storage.lease_ttl_s must be > 0 seconds, got {ttl_s}")
        self.url, self.store, self.ttl = run_url, Store(run_url, options), float(ttl_s)
        self.command = command
        self.me = {"id": uuid.uuid4().hex, "host": socket.gethostname(), "pid": os.getpid(), "command": command}
        self.version: str | None = None
        self.lost = False
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.since = 0.0

    def _record(self) -> bytes:
        now = time.time()
        return json.dumps({**self.me, "since": self.since, "since_iso": _iso(self.since), "heartbeat": now,
                           "heartbeat_iso": _iso(now), "ttl_s": self.ttl}, sort_keys=True).encode()

    def _stale(self, held: dict) -> str | None:
        """Why ``held`` no longer holds the run, or None when it does."""
        age = time.time() - float(held.get("heartbeat", 0))
        if age > float(held.get("ttl_s", self.ttl)):
            return f"its last heartbeat was {age:.0f} s ago, more than its TTL of {held.get('ttl_s', self.ttl):g} s"
        if held.get("host") == self.me["host"] and isinstance(held.get("pid"), int) and not _alive(held["pid"]):
            return f"its process {held['pid']} on this host ({held['host']}) no longer exists"
        return None

    def acquire(self) -> "RunLease":
        self.since = time.time()
        while True:
            current = self.store.read_versioned(LEASE_FILE)
            try:
                if current is None:
                    self.version = self.store.write_if(self._record(), LEASE_FILE, version=None)
                else:
                    try:
                        held = json.loads(current[0])
                    except ValueError:
                        held = {}
                    why = self._stale(held) if held else "it is not readable"
                    if why is None:
                        raise LeaseHeld(self._held_message(held))
                    self.version = self.store.write_if(self._record(), LEASE_FILE, version=current[1])
                    log.warning("took over the run %s from %s (pid %s, %s): %s", redact_url(self.url),
                                held.get("host"), held.get("pid"), held.get("command"), why)
            except WriteConflict:
                continue  # another writer changed it between our read and our write: look again
            break
        self._thread = threading.Thread(target=self._beat, name="ripple-lease-heartbeat", daemon=True)
        self._thread.start()
        log.info("holding the run %s (lease TTL %g s)", redact_url(self.url), self.ttl)
        return self

    def _held_message(self, held: dict) -> str:
        age = time.time() - float(held.get("heartbeat", 0))
        where = f"{self.url}/{LEASE_FILE}"
        return (f"run {redact_url(self.url)} is held by another writer: {held.get('command')!r} on host "
                f"{held.get('host')} (pid {held.get('pid')}), since {held.get('since_iso')}, last heartbeat "
                f"{age:.0f} s ago (TTL {held.get('ttl_s')} s). Two writers would mix checkpoints and outputs. Wait for "
                f"it to finish; if it was killed, run the same command again once its heartbeat is older than the TTL "
                f"(at once on the same host), or delete {redact_url(where)} if you are sure it is gone; or use "
                "another --run-name")

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl / 4):
            with self._lock:
                if self.lost:
                    return
                try:
                    self.version = self.store.write_if(self._record(), LEASE_FILE, version=self.version)
                except WriteConflict:
                    self.lost = True
                    log.error("lost the lease of run %s: another writer replaced it (this process paused for "
                              "longer than the TTL of %g s?); stop this run, its outputs may mix with the other's",
                              redact_url(self.url), self.ttl)
                except Exception as e:  # noqa: BLE001 - a failed heartbeat is retried at the next beat
                    log.warning("lease heartbeat of %s failed: %s", redact_url(self.url), e)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            if self.version is not None and not self.lost:
                try:
                    self.store.rm_if(self.version, LEASE_FILE)
                except WriteConflict:
                    log.error("the lease of run %s was replaced by another writer before release", redact_url(self.url))
            self.version = None

    def __enter__(self) -> "RunLease":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
