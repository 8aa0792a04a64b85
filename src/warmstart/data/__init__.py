"""Loading data: table readers, text templates, validated Datasets and the built-in datasets."""

from warmstart.data.build import from_files, from_frames, parquet_item_template, read_item_texts
from warmstart.data.builtin import (
    BUILTIN_DATASETS,
    citeulike_dropoutnet_split,
    load_builtin,
    resolve_data_dir,
)
from warmstart.data.dataset import Dataset, LoadReport
from warmstart.data.idmap import IdMap
from warmstart.data.readers import read_table
from warmstart.data.templates import TextTemplate

__all__ = [
    "BUILTIN_DATASETS",
    "Dataset",
    "IdMap",
    "LoadReport",
    "TextTemplate",
    "citeulike_dropoutnet_split",
    "from_files",
    "from_frames",
    "load_builtin",
    "parquet_item_template",
    "read_item_texts",
    "read_table",
    "resolve_data_dir",
]
