"""Training datasets: where a job may read them (the locator), uploads kept per tenant (the store), and
readers that turn csv, parquet, npz files and image folders, local or on S3, into arrays."""

from aiservice.infrastructure.datasets.locator import DatasetLocator, S3Options
from aiservice.infrastructure.datasets.readers import FORMATS, DatasetError, Table, check_readable, read_table
from aiservice.infrastructure.datasets.store import DatasetStore, DatasetWriter, StoredDataset

__all__ = [
    "FORMATS",
    "DatasetError",
    "DatasetLocator",
    "DatasetStore",
    "DatasetWriter",
    "S3Options",
    "StoredDataset",
    "Table",
    "check_readable",
    "read_table",
]
