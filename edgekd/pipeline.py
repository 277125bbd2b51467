"""The runner: prepares the data, runs the stages in order, skips finished ones, resumes after a stop.

Run directory layout (all names carry content hashes, so a changed config gets new folders and an
unchanged one reuses the old):

  runs/NAME/
    00-data-<hash>/      fixed splits (train/validation/test.jsonl, labels.json) + manifest.json
    01-teacher-<hash>/   model/ + manifest.json
    02-prune-<hash>/     ...
    run.json             the stages of the last run, in order, with their folders and status
    report.{json,md,png} copies of the report stage's outputs, for convenience
"""

import contextlib
import errno
import hashlib
import importlib
import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from edgekd import distributed
from edgekd.artifacts import (STAGING_MARK, Artifact, StagingDir, atomic_write_json, read_manifest,
                              remove_interrupted_staging, stage_outputs)
from edgekd.config import PipelineConfig
from edgekd.digest import default_cache
from edgekd.errors import EdgekdError
from edgekd.report.plot_runtimes import LATENCY_PNG, SIZE_PNG
from edgekd.runlock import RunLock
from edgekd.stage_context import StageContext
from edgekd.stages import STAGES
from edgekd.version import __version__
from edgekd.versions import library_versions, machine_fingerprint

log = logging.getLogger(__name__)


def content_hash(payload: dict) -> str:
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


@dataclass
class StageRecord:
    index: int
    kind: str
    folder: Path
    status: str  # "ran" | "skipped"
    seconds: float


@dataclass
class RunResult:
    run_dir: Path
    stages: list[StageRecord]
    artifacts: dict[str, Artifact]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class KeyInputs:
    """What cache keys are made of beyond a stage's own config, computed once per run and only if
    some stage reads it (hashing a model folder or probing the machine is not free)."""

    def __init__(self, config: PipelineConfig):
        self.config = config
        self._digests = default_cache()
        self._cache: dict[str, object] = {}

    def _once(self, name: str, compute):
        if name not in self._cache:
            self._cache[name] = compute()
        return self._cache[name]

    def model_identity(self) -> dict:
        from edgekd.assets.identity import source_identity

        return self._once("model", lambda: source_identity(self.config.model.source, "model", self._digests))

    def data_identity(self) -> dict:
        from edgekd.assets.identity import source_identity

        return self._once("data", lambda: source_identity(self.config.data.source, "dataset", self._digests))

    def machine(self) -> dict:
        return self._once("machine", machine_fingerprint)

    def settings(self, reads: tuple[str, ...]) -> tuple[dict, dict]:
        """(settings handed to the stage, their part of the key)."""
        cfg, settings, key = self.config, {}, {}
        for name in reads:
            if name == "model":
                settings["model_source"] = cfg.model.source
                key["model"] = self.model_identity()
            elif name == "max_length":
                settings["max_length"] = key["max_length"] = cfg.model.max_length
            elif name == "seed":
                settings["seed"] = key["seed"] = cfg.seed
            elif name == "pipeline":
                settings["pipeline"] = key["pipeline"] = cfg.model_dump(mode="json")
            elif name == "machine":
                key["machine"] = self.machine()
            else:
                raise ValueError(f"unknown pipeline setting {name!r} in a stage entry")
        return settings, key

    def save(self) -> None:
        self._digests.save()


def _manifest(kind: str, digest: str, parent: str | None, config: dict, key: dict, started: str, seconds: float,
              metrics: dict, outputs: dict[str, Artifact], folder: Path) -> dict:
    return {
        # "instance" tells two folders made under the same key apart (a --rerun); children's keys name it.
        "kind": kind, "hash": digest, "instance": uuid.uuid4().hex[:16], "parent": parent, "config": config, "key": key,
        "versions": library_versions(), "started": started, "finished": _now(), "seconds": round(seconds, 2),
        "metrics": metrics, "outputs": {n: a.to_manifest(folder) for n, a in outputs.items()},
    }


@contextlib.contextmanager
def _disk_full_is_a_user_error(what: str, folder: Path):
    """A full disk is the machine's state, not a bug: say which path ran out of space, in one line."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        where = exc.filename or folder
        raise EdgekdError(f"{what}: no space left on the device while writing {where}; free space under "
                          f"{folder.parent} and run the same command again (finished stages are kept)") from None


def _check_folder_is_ours(folder: Path) -> None:
    """A folder with a stage's name but no manifest is not a finished stage, and not ours to delete."""
    if folder.exists():
        raise EdgekdError(f"{folder} exists but has no manifest.json, so it is not a finished edgekd stage; move it "
                          "away to let the stage run (edgekd never deletes folders it did not finish)")


def prepare_data(config: PipelineConfig, run_dir: Path, keys: KeyInputs) -> tuple[Path, str]:
    """Read, deduplicate and split the dataset once; later runs reuse the same split files."""
    from edgekd.tasks import get_task

    task = get_task(config.task)
    key = {"data": config.data.model_dump(), "source": keys.data_identity(), "seed": config.seed,
           "edgekd": __version__}
    if config.task != "text-classification":  # (classification keys predate tasks and stay as they were)
        key["task"] = config.task
    digest = content_hash(key)
    folder = run_dir / f"00-data-{digest}"
    if read_manifest(folder) is not None:
        return folder, digest
    _check_folder_is_ours(folder)
    started, t0 = _now(), time.perf_counter()
    splits, metrics, line = task.prepare_data(config.data, task.resolve_data(config.data.source), config.seed)

    def build(out: Path) -> dict:
        task.save_splits(splits, out)
        return _manifest("data", digest, None, config.data.model_dump(), key, started, time.perf_counter() - t0,
                         metrics, {}, out)

    with _disk_full_is_a_user_error("data", folder):
        _build_folder(folder, build)
    log.info("data: %s", line)
    return folder, digest


def _build_folder(folder: Path, build, replace: bool = False) -> dict:
    """Make ``folder`` atomically: ``build(staging_path)`` writes into a staging folder and returns its
    manifest, which is written last; the folder is renamed into place only then (``replace``: a finished
    folder of the same name is retired first). On any failure the staging folder disappears."""
    staging = StagingDir(folder)
    try:
        manifest = build(staging.path)
        atomic_write_json(staging.path / "manifest.json", manifest)
        if replace:
            _retire(folder)
        staging.commit()
    except BaseException:
        staging.discard()
        raise
    return manifest


def run_pipeline(config: PipelineConfig, run_dir: Path | None = None, force: frozenset[str] = frozenset()
                 ) -> RunResult:
    """Run every stage not yet finished; a finished stage (manifest present) is loaded, not rerun.

    ``force`` names stage kinds to recompute even when finished (e.g. {"bench"} for a fresh
    measurement); the stages after them then follow, because a child's key names its parent's run.
    """
    from edgekd.preflight import check_pipeline

    check_pipeline(config)  # bad model folders, settings and labels stop here, before any training
    run_dir = Path(run_dir or config.run_dir).resolve()  # absolute, like the staging folders inside it
    # Under torchrun every rank runs the runner: rank 0 holds the lock and writes the run directory; the
    # others wait for it at each stage, train alongside it in training stages, and read what it wrote.
    rank = distributed.init_from_env()
    with RunLock(run_dir) if rank.is_main else contextlib.nullcontext():
        if rank.is_main:
            for stale in remove_interrupted_staging(run_dir):
                log.info("removed %s, left by an interrupted run", stale.name)
        keys = KeyInputs(config)
        try:
            return _run_stages(config, run_dir, keys, force, rank)
        finally:
            if rank.is_main:
                keys.save()


def _run_stages(config: PipelineConfig, run_dir: Path, keys: KeyInputs, force: frozenset[str],
                rank: distributed.DistInfo = distributed.SINGLE) -> RunResult:
    data_dir, parent = distributed.main_then_share(lambda: prepare_data(config, run_dir, keys), rank)
    artifacts: dict[str, Artifact] = {}
    records: list[StageRecord] = []
    history = [{**read_manifest(data_dir), "folder": data_dir.name}]
    for index, stage in enumerate(config.stages, start=1):
        entry = STAGES[stage.kind]
        # The parent is named by its key *and* by which making of it this is: a parent recomputed under
        # the same key (--rerun) gives its children new keys, so they can never be reused against it, not
        # even by a later run after an interruption.
        parent_run = f"{parent}@{history[-1]['instance']}"
        cfg = stage.model_dump(mode="json")
        # A config may read more than its kind always does (a prune latency target times candidates on
        # this machine's ONNX Runtime, so its key must cover the machine and those libraries).
        extra_reads, extra_libs = stage.key_extras() if hasattr(stage, "key_extras") else ((), ())
        settings, key_settings = keys.settings(entry.reads + tuple(extra_reads))
        key = {"kind": stage.kind, "config": cfg, "parent": parent_run, "settings": key_settings,
               "libraries": library_versions(entry.libraries + tuple(extra_libs))}
        if entry.revision:
            key["revision"] = entry.revision
        digest = content_hash(key)
        folder = run_dir / f"{index:02d}-{stage.kind}-{digest}"
        distributed.wait_for_main(rank)  # every rank reads the folder while rank 0 is not writing it
        manifest = read_manifest(folder)
        if manifest is not None and stage.kind not in force:
            log.info("stage %d/%d %s: finished before, reusing %s", index, len(config.stages), stage.kind, folder.name)
            artifacts.update(stage_outputs(folder, manifest))
            history.append({**manifest, "folder": folder.name})
            records.append(StageRecord(index, stage.kind, folder, "skipped", 0.0))
            parent = digest
            continue
        if manifest is None and rank.is_main:
            _check_folder_is_ours(folder)
        log.info("stage %d/%d %s: running into %s", index, len(config.stages), stage.kind, folder.name)
        ctx = StageContext(settings=settings, out=folder, data_dir=data_dir, artifacts=dict(artifacts),
                           history=list(history), task_name=config.task)
        seconds = 0.0
        if rank.is_main:
            with _disk_full_is_a_user_error(f"stage {index} ({stage.kind})", folder):
                seconds = _run_stage(entry, stage, ctx, digest, parent, cfg, key, replace=manifest is not None)
        elif entry.trains:  # the other ranks train too (DDP inside fit), writing into a throwaway folder
            with distributed.scratch_dir(folder, rank) as ctx.out:
                importlib.import_module(entry.module).run(stage, ctx)
        distributed.wait_for_main(rank)  # rank 0 has committed the folder: every rank reads its manifest
        manifest = read_manifest(folder)
        artifacts.update(stage_outputs(folder, manifest))
        history.append({**manifest, "folder": folder.name})
        records.append(StageRecord(index, stage.kind, folder, "ran", seconds))
        log.info("stage %d/%d %s: done in %.1f s", index, len(config.stages), stage.kind, seconds)
        parent = digest
    if rank.is_main:
        _write_run_summary(config, run_dir, data_dir, records, artifacts)
    return RunResult(run_dir=run_dir, stages=records, artifacts=artifacts)


def _run_stage(entry, stage, ctx: StageContext, digest: str, parent: str, cfg: dict, key: dict, replace: bool) -> float:
    """Run one stage into a staging folder that becomes ``ctx.out`` when done; returns seconds."""
    folder, started, t0 = ctx.out, _now(), time.perf_counter()

    def build(out: Path) -> dict:
        ctx.out = out
        importlib.import_module(entry.module).run(stage, ctx)
        return _manifest(stage.kind, digest, parent, cfg, key, started, time.perf_counter() - t0, ctx.metrics,
                         ctx.outputs, out)

    return _build_folder(folder, build, replace)["seconds"]


def _retire(folder: Path) -> None:
    """Move a finished stage folder aside (marked, so an interrupted clean-up finishes next run) and delete it."""
    aside = folder.with_name(f".{folder.name}.tmp-retired-{os.getpid()}")
    (folder / STAGING_MARK).write_text("superseded by a forced rerun\n")
    os.replace(folder, aside)
    shutil.rmtree(aside)


# The report files copied to the top of the run directory; the plots of runtimes exist only when rows qualify.
OPTIONAL_REPORT_FILES = (LATENCY_PNG, SIZE_PNG)
REPORT_FILES = ("report.json", "report.md", "report.png", *OPTIONAL_REPORT_FILES)


def _write_run_summary(config: PipelineConfig, run_dir: Path, data_dir: Path, records: list[StageRecord],
                       artifacts: dict[str, Artifact]) -> None:
    for name in REPORT_FILES:
        if name in artifacts:
            shutil.copyfile(artifacts[name].path, run_dir / f".{name}.copy")
            (run_dir / f".{name}.copy").replace(run_dir / name)
        elif name in OPTIONAL_REPORT_FILES:  # an earlier run's plot that this report.md no longer shows
            (run_dir / name).unlink(missing_ok=True)
    atomic_write_json(run_dir / "run.json", {
        "name": config.name, "finished": _now(), "pipeline": config.model_dump(mode="json"),
        "data": data_dir.name,
        "stages": [{"index": r.index, "kind": r.kind, "folder": r.folder.name, "status": r.status,
                    "seconds": round(r.seconds, 1)} for r in records],
        "artifacts": {n: str(a.path.relative_to(run_dir)) for n, a in artifacts.items()},
    })
