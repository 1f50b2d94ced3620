"""File formats only: tile GeoTIFFs (COG layout), tar shards with their records, parquet manifests, real-data
sources, and atomic writes. Knows no model and no job."""
