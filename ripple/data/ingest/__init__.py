"""``ripple import``: public diffusion data in the field's shared formats -> ripple's dataset layout.

Each importer reads its text source once, line by line (any fsspec URL, gzip recognised by its magic bytes),
checks every line and holds the events as flat arrays; only then does anything get written, through
``DatasetWriter`` (tables in bounded parts, ``manifest.json`` last). Bad input is a ``ValueError`` naming the file,
the line number and the offending text, raised before the first byte is written.

- ``snap_activity``: lines ``A B time KIND`` (SNAP's Higgs Twitter activity: RT, MT, RE);
- ``cascades``: one cascade per line of ``user time`` chunks, the first possibly ``root user time``, with an
  optional ``u,v`` social-link file (the Inf-VAE / DyHGCN / MS-HGAT / RotDiff format).

What becomes of each event, and which user columns are recomputed or neutral: ``tables.py`` (shared by both) and
each importer's docstring; the README's "Train on your platform's data" states the same rules.
"""
