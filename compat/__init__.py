"""Compare package versions between Dask clients, schedulers and workers."""
