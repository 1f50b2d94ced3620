"""A job's manifest rebuilt from its shard records alone (``synthgen manifest rebuild <out>``).

Every record written by ``synthgen.engine.job`` carries the job's description (name, number of shards, manifest path,
run config), so the records of a folder say which shards the job has and which are done. The manifest is merged
exactly as ``run_job`` merges it (same rows, same metadata, same bytes) and written atomically. It refuses to
merge while shards are missing, unless asked for the finished part.
"""

from __future__ import annotations

from pathlib import Path

from synthgen.engine.job import shard_file
from synthgen.errors import ManifestError, allowed
from synthgen.io.manifest import merge_records, write_manifest
from synthgen.io.shards import RECORD_SUFFIX, is_done, read_record, record_path


def jobs_in(out_dir: Path) -> dict[str, dict]:
    """The jobs whose records lie in ``out_dir``: name → description (from the record of its first shard)."""
    found: dict[str, dict] = {}
    for path in sorted(Path(out_dir).glob(f"*{RECORD_SUFFIX}")):
        shard = path.with_name(path.name.removesuffix(RECORD_SUFFIX) + ".tar")
        job = read_record(shard).get("job")
        if job is not None:
            found.setdefault(job["name"], job)
    return found


def pick_job(out_dir: Path, name: str | None) -> dict:
    """The description of the job named ``name`` in ``out_dir`` (or of its only job); one line if there is none."""
    if not Path(out_dir).is_dir():
        raise ManifestError(f"{out_dir}: shard folder not found")
    jobs = jobs_in(out_dir)
    if not jobs:
        raise ManifestError(
            f"{out_dir}: no finished shard of a generation job here (folders of synthgen ingest, landcover, rgb and "
            "climate hold <name>-NNNNN.record.json files describing their job)"
        )
    if name is None and len(jobs) > 1:
        raise ManifestError(f"{out_dir}: holds several jobs; pass --name (allowed: {allowed(jobs)})")
    if name is not None and name not in jobs:
        raise ManifestError(f"{out_dir}: no job named '{name}' (allowed: {allowed(jobs)})")
    return jobs[name] if name is not None else next(iter(jobs.values()))


def rebuild_manifest(
    out_dir: Path, manifest: Path | None = None, name: str | None = None, partial: bool = False
) -> dict:
    """Merge the records of a job's finished shards into its manifest (or ``manifest``); returns a summary.

    Missing shards are a one-line ManifestError unless ``partial``; records of another run of the same name
    (other shard count or config) are refused.
    """
    out_dir = Path(out_dir)
    job = pick_job(out_dir, name)
    shards = [out_dir / shard_file(job["name"], j) for j in range(job["num_shards"])]
    done = [path for path in shards if is_done(path)]
    for path in done:
        other = read_record(path).get("job")
        if other != job:
            raise ManifestError(
                f"{record_path(path)}: record of another run of job '{job['name']}' (differs in "
                f"{allowed(k for k in job if (other or {}).get(k) != job[k])}); rerun the job or delete that shard"
            )
    missing = [path for path in shards if not is_done(path)]
    if missing and not partial:
        raise ManifestError(
            f"{out_dir}: {len(missing)} of {len(shards)} shards of job '{job['name']}' are not finished (first: "
            f"{missing[0].name}); rerun the job's command to finish them, or pass --partial to merge the "
            f"{len(done)} finished ones"
        )
    target = Path(manifest) if manifest is not None else Path(job["manifest"])
    rows = merge_records(done, target)
    write_manifest(rows, target, run_config=job["run_config"])
    return {
        "manifest": str(target),
        "job": job["name"],
        "tiles": len(rows),
        "shards": len(done),
        "shards_missing": len(missing),
    }
