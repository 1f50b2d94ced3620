"""Generation pipelines, one diffusers pipeline per generator (``check_inputs``, one ``__call__``, dataclass output),
and the registry: generator name -> pipeline class, embedded default weights, the make target that trains them."""
