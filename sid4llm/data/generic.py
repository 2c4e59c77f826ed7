"""Any table of events: CSV / TSV / Parquet / JSONL with user, item and (optionally) time columns, named or
detected, plus an optional item file with text columns."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from .readers import (
    TEXT_COLUMNS,
    DataFormatError,
    RawData,
    _interactions_frame,
    _items_frame,
    _json_lines,
    _open_text,
    _require_columns,
    _require_file,
    _text,
    _text_list,
    no_time,
)

USER_ALIASES = ("user_id", "user", "userId", "reviewerID", "uid")
ITEM_ALIASES = ("item_id", "item", "itemId", "movieId", "parent_asin", "asin", "iid")
TIME_ALIASES = ("timestamp", "time", "ts", "unixReviewTime", "datetime", "date")


DELIMITERS = ",\t;|"


def _sniff_delimiter(path: Path, default: str) -> str:
    """The delimiter of a text table, from its first lines (",", tab, ";" or "|"); ``default`` when unclear."""
    with _open_text(path) as f:
        sample = f.read(65536)
    if not sample.strip():
        raise DataFormatError(f"{path}: the file is empty")
    header = sample.splitlines()[0]
    counts = {d: header.count(d) for d in DELIMITERS}
    if counts.get(default):
        return default
    try:
        return csv.Sniffer().sniff(sample, delimiters=DELIMITERS).delimiter
    except csv.Error:
        best = max(counts, key=counts.get)
        return best if counts[best] else default


def _read_table(path: Path) -> pd.DataFrame:
    """A CSV / TSV / Parquet / JSONL table; the delimiter of a text table is detected. Empty files, and files
    with a header but no rows, are errors that name the file."""
    name = path.name.lower().removesuffix(".gz")
    if path.stat().st_size == 0:
        raise DataFormatError(f"{path}: the file is empty (0 bytes)")
    if name.endswith(".parquet"):
        df = pd.read_parquet(path)
    elif name.endswith((".jsonl", ".json", ".ndjson")):
        df = pd.DataFrame.from_records([rec for _, rec in _json_lines(path)])
    elif name.endswith((".csv", ".tsv", ".txt")):
        sep = _sniff_delimiter(path, "\t" if name.endswith((".tsv", ".txt")) else ",")
        try:
            df = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            raise DataFormatError(f"{path}: cannot be read as a {sep!r}-delimited table: {err}") from None
    else:
        raise DataFormatError(f"{path}: unsupported file type (use .csv, .tsv, .parquet or .jsonl, optionally .gz)")
    if df.empty:
        raise DataFormatError(f"{path}: no rows" + (f" (only the header {list(df.columns)})" if len(df.columns) else ""))
    return df


def _pick_column(df: pd.DataFrame, chosen: str | None, aliases: tuple[str, ...], what: str, path: Path,
                 flag: str | None = None, otherwise: str = "") -> str:
    if chosen:
        _require_columns(df, [chosen], path)
        return chosen
    for name in aliases:
        if name in df.columns:
            return name
    hint = ""
    if len(df.columns) == 1 and re.search(r"[^\w ]", str(df.columns[0])):
        hint = " (the header is one column: is the file delimited by something other than , tab ; or | ?)"
    raise DataFormatError(
        f"{path}: no {what} column (looked for {list(aliases)}; columns found: {list(df.columns)}){hint}; "
        f"name it with --{flag or what + '_column'}{' ' + otherwise if otherwise else ''}"
    )


CATEGORY_ALIASES = ("categories", "category", "genres", "genre")


def read_item_file(item_file: str | Path, item_id_column: str | None = None, require: Iterable[str] = (),
                   known_items: set[str] | None = None, interactions_path: Path | None = None) -> pd.DataFrame:
    """An item file (CSV / TSV / Parquet / JSONL) as the items frame: ``item_id`` (column detected or given
    with ``item_id_column``) and the text columns ``title``, ``categories`` (from a ``categories``,
    ``category``, ``genres`` or ``genre`` column; "a|b;c,d" strings are split), ``brand``, ``description``
    (other string columns are appended to it). ``require`` names columns that must exist. With
    ``known_items``, an item file that matches no interaction at all is an error (rows for some items without
    interactions are fine: processing drops and counts them, the one rule of every format)."""
    ipath = _require_file(Path(item_file), "item file")
    it = _read_table(ipath)
    _require_columns(it, require, ipath)
    icol = _pick_column(it, item_id_column, ITEM_ALIASES, "item id", ipath, flag="item_id_column")
    category_col = next((c for c in CATEGORY_ALIASES if c in it.columns and c != icol), None)
    extra_cols = [c for c in it.columns if c not in (icol, category_col, *TEXT_COLUMNS)
                  and pd.api.types.is_string_dtype(it[c])]
    if known_items is not None:
        ids = it[icol].astype(str)
        if not ids.isin(known_items).any():
            raise DataFormatError(
                f"{ipath}: none of its {len(it):,} items (column {icol!r}, e.g. {ids.iloc[0]!r}) has an interaction "
                f"in {interactions_path}; wrong --item_id_column, or mismatched files?")
    rows = []
    for rec in it.to_dict("records"):
        item_id = str(rec[icol])
        cats = rec.get(category_col) if category_col else None
        if isinstance(cats, str):
            cats = [c.strip() for c in re.split(r"[|;,]", cats) if c.strip()]
        description = " ".join(
            _text_list(rec.get("description")) + [str(rec[c]) for c in extra_cols if isinstance(rec[c], str) and rec[c]]
        )
        rows.append({"item_id": item_id, "title": _text(rec.get("title")), "categories": _text_list(cats),
                     "brand": _text(rec.get("brand")), "description": description})
    return _items_frame(rows)


def read_generic(
    interactions: str | Path,
    item_file: str | Path | None = None,
    user_column: str | None = None,
    item_column: str | None = None,
    timestamp_column: str | None = None,
    timestamp_unit: str = "auto",
    item_id_column: str | None = None,
    timestamp_format: str | None = None,
) -> RawData:
    """Any CSV / TSV / Parquet / JSONL of ``user, item, timestamp`` (column names detected or given; the
    delimiter of a text file detected), plus an optional item file with an item id column (``item_id_column``)
    and text columns (``title``, ``categories``/``genres``, ``brand``, ``description``; other string columns are
    appended to the description).

    Timestamps may be Unix seconds, Unix milliseconds or date strings (``timestamp_format`` when ambiguous);
    ``timestamp_column="none"`` says the events have no time: each user's events keep their order in the file.
    """
    path = _require_file(Path(interactions), "interactions file")
    df = _read_table(path)
    u = _pick_column(df, user_column, USER_ALIASES, "user", path)
    i = _pick_column(df, item_column, ITEM_ALIASES, "item", path)
    untimed = no_time(timestamp_column)
    t = None if untimed else _pick_column(df, timestamp_column, TIME_ALIASES, "timestamp", path,
                                          otherwise="(or --timestamp_column none when the file's order is the events' order)")
    first_line = 1 if path.name.lower().removesuffix(".gz").endswith((".jsonl", ".json", ".ndjson")) else 2
    inter = _interactions_frame(df[u].astype(str), df[i].astype(str), None if untimed else df[t], path, first_line,
                                timestamp_unit,
                                df["rating"] if "rating" in df.columns else None, timestamp_format)
    items = None
    if item_file is not None:
        items = read_item_file(item_file, item_id_column, known_items=set(inter["item_id"]), interactions_path=path)
    return RawData(inter, items, f"file:{path.name}", [str(path)] + ([str(item_file)] if item_file else []),
                   event_order="file" if untimed else "timestamp")
