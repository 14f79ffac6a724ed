"""The writer process of ``test_atomic_writes``: an embeddings-style folder through the commit protocol.

``python atomic_writer.py '<json args>'`` runs ``write(args)``; at ``args["stop"]`` (a part index, or "cleanup":
inside ``commit``, after the manifest is written, at the first stale part it deletes) it creates the file
``args["signal"]`` and waits to be killed. ``mode: "bytes"`` writes one ``args["mb"]`` MiB object ``args["name"]``
with ``Store.write_bytes`` instead, creating the signal file just before.
"""
from __future__ import annotations

import json
import os
import sys
import time

import pyarrow as pa

from ripple.data import storage as st


def table(gen: int, part: int, rows: int) -> pa.Table:
    """Part ``part`` of generation ``gen``: user ids ``gen * 1000 + part * rows ...``, and the generation."""
    lo = gen * 1000 + part * rows
    return pa.table({"user_id": pa.array(range(lo, lo + rows), pa.int64()), "gen": pa.array([gen] * rows, pa.int64())})


def write(a: dict) -> None:
    store = st.Store(a["url"], st.StorageOptions(endpoint_url=a.get("endpoint")))

    def hold() -> None:
        open(a["signal"], "w").close()
        time.sleep(600)  # the test kills us here

    if a.get("mode") == "bytes":
        data = os.urandom(1 << 20) * a["mb"]
        open(a["signal"], "w").close()
        store.write_bytes(data, a["name"])
        return
    if a.get("stop") == "cleanup":
        real_rm = st.Store.rm

        def rm(self, *parts, **kw):
            if parts and parts[-1].startswith("part-"):
                hold()
            return real_rm(self, *parts, **kw)

        st.Store.rm = rm
    st.begin(store)
    parts = []
    for i in range(a["parts"]):
        if a.get("stop") == i:
            hold()
        parts.append(st.write_part(store, table(a["gen"], i, a["rows"]), i))
    st.commit(store, parts)


if __name__ == "__main__":
    write(json.loads(sys.argv[1]))
