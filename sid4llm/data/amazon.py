"""Amazon review datasets: the 2014 and 2018 releases (``reviews_*.json.gz`` / ``*.json.gz`` with ``meta_*``
metadata) and Amazon Reviews 2023 (``Category.jsonl`` + ``meta_Category.jsonl``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .readers import (
    DataFormatError,
    RawData,
    _dedup_keep_order,
    _interactions_frame,
    _items_frame,
    _json_lines,
    _require_file,
    _text_list,
)


@dataclass(frozen=True)
class AmazonRelease:
    """Where one release of the McAuley lab's Amazon Reviews keeps each field (first key present wins)."""

    name: str
    user: str
    items: tuple[str, ...]
    time: str
    rating: str
    time_unit: str
    meta_item: str
    categories: tuple[str, ...]
    brand: str
    description: tuple[str, ...]
    python_literals: bool = False  # 2014 metadata is Python-literal syntax, parsed safely


AMAZON_2014 = AmazonRelease("amazon", "reviewerID", ("asin",), "unixReviewTime", "overall", "s", "asin",
                            ("categories", "category"), "brand", ("description",), python_literals=True)
AMAZON_2023 = AmazonRelease("amazon2023", "user_id", ("parent_asin", "asin"), "timestamp", "rating", "ms", "parent_asin",
                            ("categories", "main_category"), "store", ("features", "description"))


def _first_of(record: dict, keys: tuple[str, ...]):
    return next((record[k] for k in keys if record.get(k)), None)


def _read_amazon_release(release: AmazonRelease, reviews: str | Path, metadata: str | Path | None) -> RawData:
    path = _require_file(Path(reviews), f"{release.name} review file")
    users, items, times, ratings, first = [], [], [], [], None
    for line_no, rec in _json_lines(path):
        first = first or line_no
        item = _first_of(rec, release.items)
        missing = [k for k, v in ((release.user, rec.get(release.user)), (release.items[0], item),
                                  (release.time, rec.get(release.time))) if v is None]
        if missing:
            raise DataFormatError(f"{path}, line {line_no}: missing field " + (
                f"'{missing[0]}'" if len(missing) == 1 else f"(s) {missing}"))
        users.append(rec[release.user])
        items.append(item)
        times.append(rec[release.time])
        ratings.append(rec.get(release.rating))
    if first is None:
        raise DataFormatError(f"{path}: no reviews in file")
    inter = _interactions_frame(users, items, times, path, first, release.time_unit, ratings)
    meta, skipped = None, 0
    if metadata is not None:
        meta_path = _require_file(Path(metadata), f"{release.name} metadata file")
        reviewed = set(inter["item_id"].unique())
        rows = []
        for line_no, rec in _json_lines(meta_path, python_literals=release.python_literals):
            if release.meta_item not in rec:
                raise DataFormatError(f"{meta_path}, line {line_no}: missing field '{release.meta_item}'")
            if rec[release.meta_item] not in reviewed:  # the metadata covers the whole category
                skipped += 1
                continue
            rows.append({
                "item_id": rec[release.meta_item],
                "title": str(rec.get("title") or ""),
                "categories": _dedup_keep_order(next((c for c in (_text_list(rec.get(k)) for k in release.categories) if c), [])),
                "brand": str(rec.get(release.brand) or ""),
                "description": " ".join(t for k in release.description for t in _text_list(rec.get(k))),
            })
        meta = _items_frame(rows)
    return RawData(inter, meta, release.name, [str(path)] + ([str(metadata)] if metadata else []), skipped)


def read_amazon(reviews: str | Path, metadata: str | Path | None = None) -> RawData:
    """Amazon Reviews 2014 or 2018 (McAuley lab): review JSON lines (e.g. ``reviews_Beauty_5.json.gz`` or
    ``Beauty_5.json.gz``) plus optional metadata (``meta_Beauty.json.gz``). Metadata rows for products nobody
    reviewed are expected and skipped."""
    return _read_amazon_release(AMAZON_2014, reviews, metadata)


def read_amazon2023(reviews: str | Path, metadata: str | Path | None = None) -> RawData:
    """Amazon Reviews 2023 (McAuley lab): ``Category.jsonl`` reviews + ``meta_Category.jsonl``. Items are keyed by
    ``parent_asin`` (variants of one product are one item), timestamps are in ms."""
    return _read_amazon_release(AMAZON_2023, reviews, metadata)


