"""A job's manifest rebuilt from its shard records alone (``synthgen manifest rebuild <out>``).

Every record written by ``synthgen.engine.job`` carries the job's description (name, number of shards, manifest path,
run config), so the records of a folder say which shards the job has and which are done. The manifest is merged
exactly as ``run_job`` merges it (same rows, same metadata, same bytes) and written atomically. It refuses to
merge while shards are missing, unless asked for the finished part.

Records are data, not instructions: the manifest is written only where the command line says (``--manifest``, or
the generators' default ``manifests/<name>.parquet`` when the job wrote it there), never to the path a record
names, and a record is trusted only for the job its own file name says (``<name>-NNNNN.record.json``), so the shards
read are the folder's own. An existing file that is not a manifest is never overwritten.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from synthgen.engine.job import shard_file
from synthgen.errors import ManifestError, allowed
from synthgen.io.manifest import write_job_manifest
from synthgen.io.manifest_checks import shard_index, show
from synthgen.io.shards import RECORD_SUFFIX, read_record, record_path

DEFAULT_MANIFEST = "manifests/{name}.parquet"  # the generators' and ingest's default --manifest
JOB_FIELDS = {"name": str, "tiles": int, "tiles_per_shard": int, "num_shards": int, "run_config": dict}


def job_of(shard: Path) -> dict | None:
    """The job description in the record of ``shard`` (None for a record without one), checked: well formed, and
    of the job the shard's own file name says (``<name>-NNNNN.tar``, with NNNNN below its number of shards)."""
    record = read_record(shard)
    job = record.get("job")
    if job is None:
        return None
    where = record_path(shard)
    if (
        not isinstance(job, dict)
        or any(type(job.get(k)) is not t for k, t in JOB_FIELDS.items())
        or job["tiles_per_shard"] < 1
        or job["num_shards"] != -(-job["tiles"] // job["tiles_per_shard"])
    ):
        fields = ", ".join(f"{k} ({t.__name__})" for k, t in JOB_FIELDS.items())
        raise ManifestError(f"{where}: the job description is malformed (it needs {fields}, consistent)")
    index = shard_index(Path(shard).name, job["name"])
    if index is None or index >= job["num_shards"] or record.get("shard") != Path(shard).name:
        raise ManifestError(
            f"{where}: the record describes shard {show(record.get('shard'))} of job {show(job['name'])} "
            f"({job['num_shards']} shards), not {Path(shard).name}: it was edited or copied from elsewhere"
        )
    return job


def jobs_in(out_dir: Path) -> dict[str, dict[Path, dict]]:
    """The jobs whose records lie in ``out_dir``: name → {finished shard → its record's job description}."""
    found: dict[str, dict[Path, dict]] = {}
    for path in sorted(Path(out_dir).glob(f"*{RECORD_SUFFIX}")):
        shard = path.with_name(path.name.removesuffix(RECORD_SUFFIX) + ".tar")
        job = job_of(shard)
        if job is not None:
            found.setdefault(job["name"], {})[shard] = job
    return found


def manifest_target(out_dir: Path, job: dict, manifest: Path | None) -> Path:
    """Where the rebuild writes: ``manifest``, else the default ``manifests/<name>.parquet`` if the job wrote its
    manifest there; any other path the records name is refused (pass it as ``--manifest``). An existing file that
    is not a parquet file is never overwritten."""
    if manifest is None:
        manifest = Path(DEFAULT_MANIFEST.format(name=job["name"]))
        if str(manifest.resolve()) != job.get("manifest"):
            raise ManifestError(
                f"{out_dir}: job '{job['name']}' was run with --manifest {show(job.get('manifest'))}, not the default "
                f"{manifest}; pass --manifest PATH to say where to write it (a rebuild writes only where its command "
                "line says)"
            )
    manifest = Path(manifest)
    if manifest.exists() or manifest.is_symlink():
        try:
            if not manifest.is_file():
                raise pa.ArrowInvalid("not a file")
            pq.read_schema(manifest)
        except (pa.ArrowInvalid, OSError):
            raise ManifestError(
                f"{manifest}: exists and is not a parquet manifest; a rebuild overwrites only a manifest (give "
                "another --manifest)"
            ) from None
    return manifest


def pick_job(out_dir: Path, name: str | None) -> tuple[dict, dict[Path, dict]]:
    """The job named ``name`` in ``out_dir`` (or its only job): its description (from the record of its first
    finished shard) and its finished shards with their descriptions; one line if there is none."""
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
    shards = jobs[name] if name is not None else next(iter(jobs.values()))
    return next(iter(shards.values())), shards


def rebuild_manifest(
    out_dir: Path, manifest: Path | None = None, name: str | None = None, partial: bool = False
) -> dict:
    """Merge the records of a job's finished shards into ``manifest`` (see ``manifest_target``); returns a summary.

    Missing shards are a one-line ManifestError unless ``partial``; records of another run of the same name
    (other shard count or config) are refused.
    """
    out_dir = Path(out_dir)
    job, finished = pick_job(out_dir, name)
    for path, other in finished.items():
        if other != job:
            raise ManifestError(
                f"{record_path(path)}: record of another run of job '{job['name']}' (differs in "
                f"{allowed(k for k in job if other.get(k) != job[k])}); rerun the job or delete that shard"
            )
    done = sorted(finished, key=lambda path: shard_index(path.name, job["name"]))
    missing = job["num_shards"] - len(done)
    if missing and not partial:
        first = next(j for j in range(len(done) + 1) if out_dir / shard_file(job["name"], j) not in finished)
        raise ManifestError(
            f"{out_dir}: {missing} of {job['num_shards']} shards of job '{job['name']}' are not finished (first: "
            f"{shard_file(job['name'], first)}); rerun the job's command to finish them, or pass --partial to merge "
            f"the {len(done)} finished ones"
        )
    target = manifest_target(out_dir, job, manifest)
    rows = write_job_manifest(done, target, job)
    return {
        "manifest": str(target),
        "job": job["name"],
        "tiles": len(rows),
        "shards": len(done),
        "shards_missing": missing,
    }
