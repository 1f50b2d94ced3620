"""One job per command (landcover, rgb, climate, ingest): a config and a task in, sample dicts out,
run on the shard engine."""
