"""Recreate ``higgs-activity-slice.txt.gz`` from SNAP's Higgs Twitter activity file (see ``SOURCE.md``).

    python tests/data/higgs/make_slice.py ORIGINAL [--out tests/data/higgs/higgs-activity-slice.txt.gz]

ORIGINAL is ``higgs-activity_time.txt.gz`` (gzip or plain text; its sha256 is checked). The rule: every line of the
original whose second field B (the user retweeted, mentioned or replied to) is a multiple of ``MODULUS``, copied
verbatim and in the original's order. The output is a gzip written with mtime 0, no file name and level 9, so the
same input gives the same bytes; ``SOURCE.md`` records the sha256 of both the gzip and the text inside it.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import sys

ORIGINAL_SHA256 = "901b199716a23b0fc0371705e3ae9941b5c9493277aec65456abc4988674ad79"
MODULUS = 40
HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "higgs-activity-slice.txt.gz")


def keep(line: bytes) -> bool:
    """The slice's rule: B (the second field) is a multiple of ``MODULUS``."""
    fields = line.split()
    return len(fields) == 4 and int(fields[1]) % MODULUS == 0


def slice_lines(raw: bytes) -> bytes:
    """The kept lines of the original's text, verbatim (line endings included), in order."""
    return b"".join(line for line in raw.splitlines(keepends=True) if keep(line))


def gzip_bytes(text: bytes) -> bytes:
    """``text`` gzipped reproducibly: mtime 0, no file name in the header, compression level 9."""
    import io

    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as g:
        g.write(text)
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("original", help="higgs-activity_time.txt.gz (SNAP Higgs Twitter activity)")
    p.add_argument("--out", default=DEFAULT_OUT)
    args = p.parse_args(argv)
    with open(args.original, "rb") as f:
        data = f.read()
    sha = hashlib.sha256(data).hexdigest()
    if sha != ORIGINAL_SHA256:
        print(f"warning: {args.original} has sha256 {sha}, not the original's {ORIGINAL_SHA256}", file=sys.stderr)
    raw = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    text = slice_lines(raw)
    out = gzip_bytes(text)
    with open(args.out, "wb") as f:
        f.write(out)
    lines = text.count(b"\n")
    print(f"{args.out}: {lines} lines, {len(out)} bytes, sha256 {hashlib.sha256(out).hexdigest()}, "
          f"text sha256 {hashlib.sha256(text).hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
