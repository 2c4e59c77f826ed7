"""Recommendation data: readers for public formats, cleaning, leave-one-out splits, prepared folders."""

from .amazon import read_amazon, read_amazon2023
from .generic import read_generic, read_item_file
from .prepare import PrepareDataArguments, PreparedData, embed_items, prepare_dataset
from .processing import ProcessedData, k_core, process_interactions
from .profile import CatalogueProfile, ProfileError
from .readers import DataFormatError, RawData, read_movielens, read_recbole_atomic
from .sources import BUNDLED, bundled_dataset_dir, load_raw

__all__ = [
    "BUNDLED",
    "CatalogueProfile",
    "ProfileError",
    "DataFormatError",
    "PrepareDataArguments",
    "PreparedData",
    "ProcessedData",
    "RawData",
    "bundled_dataset_dir",
    "embed_items",
    "k_core",
    "load_raw",
    "prepare_dataset",
    "process_interactions",
    "read_amazon",
    "read_amazon2023",
    "read_generic",
    "read_item_file",
    "read_movielens",
    "read_recbole_atomic",
]
