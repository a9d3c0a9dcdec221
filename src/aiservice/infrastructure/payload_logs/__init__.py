"""Payload logs outside the database: the Parquet files of the Parquet sink."""
