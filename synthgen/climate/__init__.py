"""Climate inputs of the climate generator: sites tables, climate cubes, normals, radiation, prompt templates.
Data and text only: no model, no shard."""
