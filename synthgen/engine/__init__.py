"""The shard engine: plan, seeds, ranks, resume, records, writer processes, manifest merge and rebuild.
It knows no model: jobs hand it a render function that yields sample dicts."""
