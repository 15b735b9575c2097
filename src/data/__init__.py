"""Input data: CSV / TSV / Parquet files and built-in data sets, with generic validation."""

from .loading import (BUILTIN_DATASETS, DEFAULT_SOURCE, builtin_path, check_enough_rows,
                      file_sha256, load_table, numeric_matrix)

__all__ = ["BUILTIN_DATASETS", "DEFAULT_SOURCE", "builtin_path", "check_enough_rows",
           "file_sha256", "load_table", "numeric_matrix"]
