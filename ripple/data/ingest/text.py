"""Token parsers shared by the importers: every refusal names the file, the line number and the text."""
from __future__ import annotations

import math
import re

import numpy as np

from ripple.data.storage import TextSource, redact_url

_UINT = re.compile(r"[0-9]+")
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_INT64_MAX = (1 << 63) - 1
#: seconds per unit of ``--time-unit``
TIME_UNITS = {"s": 1, "ms": 0.001, "min": 60, "h": 3600, "d": 86400}


class Records:
    """The lines of a text source that hold data, numbered as in the file: blank lines and ``#`` comments (SNAP's
    headers) are skipped and counted (``counts``)."""

    def __init__(self, src: TextSource):
        self.src, self.lines, self.blank, self.comments = src, 0, 0, 0

    def __iter__(self):
        for lineno, line in self.src.lines():
            self.lines = lineno
            text = line.strip()
            if not text:
                self.blank += 1
            elif text.startswith("#"):
                self.comments += 1
            else:
                yield lineno, line

    def counts(self) -> dict:
        return {"lines": self.lines, "blank": self.blank, "comments": self.comments}


class UserNames:
    """User tokens -> int64 ids. When every token is a non-negative integer, the ids are those integers (as the
    data gives them); otherwise (names, URLs, hashes) every user gets a dense id 0.. in order of first appearance
    and the names are kept (``resolve``) for the dataset's ``user_names`` table. Tokens are coded as they come;
    ``resolve`` says what each code's id is once every file has been read."""

    def __init__(self):
        self.codes: dict[str, int] = {}

    def code(self, token: str) -> int:
        c = self.codes.get(token)
        if c is None:
            c = self.codes[token] = len(self.codes)
        return c

    def resolve(self) -> tuple[np.ndarray, list[str] | None]:
        """(id of each code [K] int64, the names when they are not integers, else None)."""
        names = list(self.codes)  # dicts keep insertion order: names[code]
        if all(_UINT.fullmatch(n) and int(n) <= _INT64_MAX for n in names):
            return np.array([int(n) for n in names], dtype=np.int64), None
        return np.arange(len(names), dtype=np.int64), names


def _shown(text: str, limit: int = 160) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def bad_line(src: TextSource, lineno: int, text: str, why: str, fix: str) -> ValueError:
    """The one error of a refused line: ``FILE line N: why: 'text'; fix``."""
    return ValueError(f"{redact_url(src.url)} line {lineno}: {why}: {_shown(text)}; {fix}")


def user_id(token: str, src: TextSource, lineno: int, line: str, what: str = "user id") -> int:
    if not _UINT.fullmatch(token) or int(token) > _INT64_MAX:
        raise bad_line(src, lineno, line, f"{what} {token!r} is not a non-negative integer",
                       "ripple imports integer user ids; map other ids to integers first")
    return int(token)


def timestamp(token: str, src: TextSource, lineno: int, line: str, seconds_per_unit: float = 1) -> int:
    """Whole seconds (floored) from a non-negative number in the file's time unit."""
    if not _NUMBER.fullmatch(token):
        raise bad_line(src, lineno, line, f"timestamp {token!r} is not a number",
                       "write epoch or relative times as numbers (see --time-unit)")
    value = float(token) * seconds_per_unit
    if value < 0:
        raise bad_line(src, lineno, line, f"timestamp {token!r} is negative",
                       "times must be >= 0 (epoch-based or relative to the data's start)")
    if not math.isfinite(value) or value > _INT64_MAX:
        raise bad_line(src, lineno, line, f"timestamp {token!r} is out of range", "check --time-unit")
    return int(value)


def empty_file(src: TextSource, what: str) -> ValueError:
    return ValueError(f"{redact_url(src.url)}: empty: the file holds no {what} ({src.size:,} bytes read); "
                      "check the path and that the download finished")
