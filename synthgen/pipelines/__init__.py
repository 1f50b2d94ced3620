"""Generation pipelines: one diffusers pipeline per generator."""
