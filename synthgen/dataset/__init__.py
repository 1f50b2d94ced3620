"""The `synthgen dataset` orchestrator: one config runs landcover -> rgb -> climate -> validate into one folder,
with stage done-markers, previews and a report."""
