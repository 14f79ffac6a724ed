"""The social-graph schema: node tables, edge tables, labels, and the hidden truth tables.

Everything that reads or writes a dataset takes column names, dtypes and edge directions from here, so the
generator, the validator, the partitioner and the loaders cannot drift apart.

Direction convention: a ``follows`` row (src=follower, dst=followee) carries messages src -> dst, so a user's
representation aggregates its followers, then its followers' followers, which is the way influence flows.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

SCHEMA_VERSION = 1

#: Width of ``user.topic_vector`` and of the topic one-hot used for content and communities.
NUM_TOPICS = 16
#: Width of ``content.text_emb``.
TEXT_EMB_DIM = 16
#: ``content.type`` codes: 0 post, 1 image, 2 video.
NUM_CONTENT_TYPES = 3

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    #: For list columns: the fixed number of elements every row must have.
    width: int | None = None
    #: Values must be >= 0 (counts, sizes, timestamps).
    non_negative: bool = False
    #: Values must be finite (no NaN / inf); applies to floats and float lists.
    finite: bool = True
    #: Allowed values for categorical columns.
    allowed: tuple | None = None
    #: Null means "not measured" (a replicate a one-post user cannot have, a user the oracle did not simulate).
    nullable: bool = False
    #: The column may be absent from a table (one written before it existed, or one that has nothing to say in
    #: it): read and written as all null. Only nullable columns can be optional.
    optional: bool = False


@dataclass(frozen=True)
class Table:
    """One table of the dataset layout (``<data>/<name>/part-*.parquet``)."""

    name: str
    columns: tuple[Column, ...]
    #: Node tables: the id column, unique per row.
    id_column: str | None = None
    #: Edge tables: (src node type, dst node type); ``src``/``dst`` columns refer to those tables' ids.
    endpoints: tuple[str, str] | None = None
    #: Edge tables where src == dst is meaningless (a user following themself).
    forbid_self_loops: bool = False
    #: Tables under ``_truth/`` exist only for synthetic data and are never read by training or inference.
    truth: bool = False
    optional: bool = False

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"table {self.name!r} has no column {name!r}; columns are {self.column_names}")

    def arrow_schema(self) -> pa.Schema:
        return pa.schema([pa.field(c.name, c.type) for c in self.columns])

    def from_pydict(self, columns: dict) -> pa.Table:
        """A table of this schema from column values; optional columns not given are all null."""
        n = len(next(iter(columns.values()))) if columns else 0
        full = {c.name: columns.get(c.name, [None] * n if c.optional else None) for c in self.columns}
        missing = [k for k, v in full.items() if v is None]
        if missing:
            raise KeyError(f"table {self.name!r}: no values for column(s) {missing}")
        return pa.table(full, schema=self.arrow_schema())


f32_list = pa.list_(pa.float32())

USER = Table("user", (
    Column("id", pa.int64(), non_negative=True),
    Column("follower_count", pa.int64(), non_negative=True),
    Column("avg_engagement", pa.float32(), non_negative=True),
    Column("topic_vector", f32_list, width=NUM_TOPICS),
), id_column="id")

CONTENT = Table("content", (
    Column("id", pa.int64(), non_negative=True),
    Column("type", pa.int8(), allowed=tuple(range(NUM_CONTENT_TYPES))),
    Column("topic", pa.int32(), allowed=tuple(range(NUM_TOPICS))),
    Column("timestamp", pa.int64(), non_negative=True),
    Column("text_emb", f32_list, width=TEXT_EMB_DIM),
), id_column="id")

COMMUNITY = Table("community", (
    Column("id", pa.int64(), non_negative=True),
    Column("size", pa.int64(), non_negative=True),
    Column("topic_focus", pa.int32(), allowed=tuple(range(NUM_TOPICS))),
    Column("density", pa.float32(), non_negative=True),
), id_column="id")

FOLLOWS = Table("follows", (
    Column("src", pa.int64()),
    Column("dst", pa.int64()),
    Column("since_date", pa.int64(), non_negative=True),
    Column("interaction_freq", pa.float32(), non_negative=True),
), endpoints=("user", "user"), forbid_self_loops=True)

SHARED = Table("shared", (
    Column("src", pa.int64()), Column("dst", pa.int64()), Column("timestamp", pa.int64(), non_negative=True),
), endpoints=("user", "content"))

CREATED = Table("created", (
    Column("src", pa.int64()), Column("dst", pa.int64()), Column("timestamp", pa.int64(), non_negative=True),
), endpoints=("user", "content"))

MEMBER_OF = Table("member_of", (Column("src", pa.int64()), Column("dst", pa.int64())),
                  endpoints=("user", "community"))

REPLY_TO = Table("reply_to", (Column("src", pa.int64()), Column("dst", pa.int64())),
                 endpoints=("content", "content"), forbid_self_loops=True)

LABELS = Table("labels", (
    Column("user_id", pa.int64()),
    Column("cascade_reach", pa.float32(), non_negative=True),
    Column("cascade_reach_replicate", pa.float32(), non_negative=True, nullable=True),
    Column("split", pa.string(), allowed=SPLITS),
    # the row's cut time T (epoch seconds) in a training table at many cut times (``ripple labels --cutoffs``): the
    # label is the reach of the user's posts in [T, T+H), the row's inputs what existed before T. A user has one
    # row per cut time. Null (or absent) for labels at one time: simulated, or one --cutoff.
    Column("time", pa.int64(), non_negative=True, nullable=True, optional=True),
), id_column="user_id")

#: ``interactions.kind``: what one user did to another, as an importer of public data found it
INTERACTION_KINDS = ("reshare", "mention", "reply", "diffusion")

#: Every user -> user event an interaction graph was derived from (``ripple import``): ``follows`` then holds one
#: row per (src, dst) pair with ``since_date`` = the first event and ``interaction_freq`` = the count, and
#: ``ripple labels`` recounts ``interaction_freq`` from the events before its cutoff (a whole-history count would
#: leak later interactions into the past graph). Not a message-passing relation: the model reads ``follows``.
INTERACTIONS = Table("interactions", (
    Column("src", pa.int64()), Column("dst", pa.int64()), Column("timestamp", pa.int64(), non_negative=True),
    Column("kind", pa.string(), allowed=INTERACTION_KINDS),
), endpoints=("user", "user"), forbid_self_loops=True, optional=True)

#: The names of users whose source gave no integer ids (``ripple import cascades`` of named users): ``id`` is the
#: dense id every table uses, ``name`` the token in the source. Read it to put names on embeddings and seeds.
USER_NAMES = Table("user_names", (
    Column("id", pa.int64(), non_negative=True), Column("name", pa.string()),
), id_column="id", optional=True)

TRUTH_IC_EDGES = Table("_truth/ic_edges", (
    Column("src", pa.int64()), Column("dst", pa.int64()), Column("p", pa.float32(), non_negative=True),
), endpoints=("user", "user"), truth=True, optional=True)

TRUTH_USERS = Table("_truth/users", (
    Column("id", pa.int64()),
    Column("persuasiveness", pa.float32(), non_negative=True),
    Column("receptivity", pa.float32(), non_negative=True),
    Column("is_bot", pa.bool_()),
    Column("community", pa.int64()),
    Column("is_bridge", pa.bool_()),
    #: mean reach of ``label_simulations`` IC simulations from the user (null: not simulated, see max_labeled)
    Column("expected_reach", pa.float32(), non_negative=True, nullable=True),
), id_column="id", truth=True, optional=True)

NODE_TABLES: dict[str, Table] = {t.name: t for t in (USER, CONTENT, COMMUNITY)}
EDGE_TABLES: dict[str, Table] = {t.name: t for t in (FOLLOWS, SHARED, CREATED, MEMBER_OF, REPLY_TO)}
TABLES: dict[str, Table] = {**NODE_TABLES, **EDGE_TABLES, "labels": LABELS, INTERACTIONS.name: INTERACTIONS,
                            USER_NAMES.name: USER_NAMES,
                            TRUTH_IC_EDGES.name: TRUTH_IC_EDGES, TRUTH_USERS.name: TRUTH_USERS}


@dataclass(frozen=True)
class Relation:
    """A message-passing relation of the model: an edge table read forward or reversed."""

    edge_type: tuple[str, str, str]
    table: str
    reverse: bool = False


def relations() -> list[Relation]:
    """Forward relations plus reverses of those that end in content or community.

    Without ``rev_*`` relations content and community information never reaches users: the model predicts on
    users, and messages only flow along edge direction.
    """
    out: list[Relation] = []
    for t in EDGE_TABLES.values():
        s, d = t.endpoints
        out.append(Relation((s, t.name, d), t.name))
        if s == "user" and d != "user":
            out.append(Relation((d, f"rev_{t.name}", s), t.name, reverse=True))
    return out


NODE_TYPES = tuple(NODE_TABLES)
EDGE_TYPES = tuple(r.edge_type for r in relations())


@dataclass
class DatasetManifest:
    """``<data>/manifest.json``: written last by whoever writes a dataset."""

    schema_version: int = SCHEMA_VERSION
    rows: dict[str, int] = field(default_factory=dict)
    label_simulations: int | None = None
    generator: dict | None = None
    #: a generated post history's time range ``{"start", "end"}`` (epoch seconds)
    history: dict | None = None
    #: how ``ripple labels`` derived the labels (cutoff, horizon, min posts, counts, reliability method)
    labels: dict | None = None
    #: where imported data came from (``ripple import``): format, file name and sha256, what ``follows`` is (a
    #: social graph or an interaction graph), the rules that made posts, and the dropped and duplicate lines
    source: dict | None = None


MANIFEST_FIELDS = ("schema_version", "rows", "label_simulations", "generator", "history", "labels", "source")
