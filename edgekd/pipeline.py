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

import hashlib
import importlib
import json
import logging
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from edgekd.artifacts import Artifact, StagingDir, atomic_write_json, read_manifest, stage_outputs
from edgekd.config import PipelineConfig
from edgekd.stage_context import StageContext
from edgekd.version import __version__
from edgekd.versions import library_versions

log = logging.getLogger(__name__)

# kind -> module with run(cfg, ctx); imported only when the stage actually runs.
STAGE_MODULES = {
    "teacher": "edgekd.teacher.stage", "prune": "edgekd.prune.stage", "distill": "edgekd.distill.stage",
    "export": "edgekd.export.stage", "quantize": "edgekd.quantize.stage", "bundle": "edgekd.bundle.stage",
    "bench": "edgekd.bench.stage", "report": "edgekd.report.stage",
}


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


def _manifest(kind: str, digest: str, parent: str | None, config: dict, seed: int, started: str, seconds: float,
              metrics: dict, outputs: dict[str, Artifact], folder: Path) -> dict:
    return {
        "kind": kind, "hash": digest, "parent": parent, "config": config, "seed": seed,
        "versions": library_versions(), "started": started, "finished": _now(), "seconds": round(seconds, 2),
        "metrics": metrics, "outputs": {n: a.to_manifest(folder) for n, a in outputs.items()},
    }


def prepare_data(config: PipelineConfig, run_dir: Path) -> tuple[Path, str]:
    """Read, deduplicate and split the dataset once; later runs reuse the same split files."""
    from edgekd.assets import resolve_dataset_file
    from edgekd.data import make_splits, read_labelled_text, save_splits

    digest = content_hash({"data": config.data.model_dump(), "seed": config.seed, "edgekd": __version__})
    folder = run_dir / f"00-data-{digest}"
    if read_manifest(folder) is not None:
        return folder, digest
    started, t0 = _now(), time.perf_counter()
    cfg = config.data
    source = resolve_dataset_file(cfg.source)
    pairs = read_labelled_text(source, cfg.text_column, cfg.label_column, cfg.drop_labels, cfg.hub_split)
    splits = make_splits(pairs, cfg.validation_fraction, cfg.test_fraction, config.seed, cfg.max_train_examples,
                         where=cfg.source)
    staging = StagingDir(folder)
    try:
        save_splits(splits, staging.path)
        sizes = {name: len(splits[name]) for name in ("train", "validation", "test")}
        per_class = {name: [splits[name].labels.count(i) for i in range(len(splits.label_names))] for name in sizes}
        metrics = {"sizes": sizes, "per_class": per_class, "label_names": splits.label_names}
        atomic_write_json(staging.path / "manifest.json", _manifest(
            "data", digest, None, cfg.model_dump(), config.seed, started, time.perf_counter() - t0, metrics, {},
            staging.path))
        staging.commit()
    except BaseException:
        staging.discard()
        raise
    log.info("data: %s train / %s validation / %s test examples, classes %s", sizes["train"], sizes["validation"],
             sizes["test"], splits.label_names)
    return folder, digest


def run_pipeline(config: PipelineConfig, run_dir: Path | None = None) -> RunResult:
    """Run every stage not yet finished; a finished stage (manifest present) is loaded, not rerun."""
    run_dir = Path(run_dir or config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    for stale in run_dir.glob(".*.tmp-*"):  # leftovers of an interrupted stage
        shutil.rmtree(stale, ignore_errors=True)
    data_dir, parent = prepare_data(config, run_dir)
    artifacts: dict[str, Artifact] = {}
    records: list[StageRecord] = []
    history = [{**read_manifest(data_dir), "folder": data_dir.name}]
    for index, stage in enumerate(config.stages, start=1):
        cfg = stage.model_dump(mode="json")
        digest = content_hash({"kind": stage.kind, "config": cfg, "parent": parent, "edgekd": __version__})
        folder = run_dir / f"{index:02d}-{stage.kind}-{digest}"
        manifest = read_manifest(folder)
        if manifest is not None:
            log.info("stage %d/%d %s: finished before, reusing %s", index, len(config.stages), stage.kind, folder.name)
            artifacts.update(stage_outputs(folder, manifest))
            history.append({**manifest, "folder": folder.name})
            records.append(StageRecord(index, stage.kind, folder, "skipped", 0.0))
            parent = digest
            continue
        log.info("stage %d/%d %s: running into %s", index, len(config.stages), stage.kind, folder.name)
        staging = StagingDir(folder)
        ctx = StageContext(pipeline=config, out=staging.path, data_dir=data_dir, artifacts=dict(artifacts),
                           history=list(history))
        started, t0 = _now(), time.perf_counter()
        try:
            importlib.import_module(STAGE_MODULES[stage.kind]).run(stage, ctx)
            seconds = time.perf_counter() - t0
            atomic_write_json(staging.path / "manifest.json", _manifest(
                stage.kind, digest, parent, cfg, config.seed, started, seconds, ctx.metrics, ctx.outputs, staging.path))
            staging.commit()
        except BaseException:
            staging.discard()
            raise
        manifest = read_manifest(folder)
        artifacts.update(stage_outputs(folder, manifest))
        history.append({**manifest, "folder": folder.name})
        records.append(StageRecord(index, stage.kind, folder, "ran", seconds))
        log.info("stage %d/%d %s: done in %.1f s", index, len(config.stages), stage.kind, seconds)
        parent = digest
    _write_run_summary(config, run_dir, data_dir, records, artifacts)
    return RunResult(run_dir=run_dir, stages=records, artifacts=artifacts)


def _write_run_summary(config: PipelineConfig, run_dir: Path, data_dir: Path, records: list[StageRecord],
                       artifacts: dict[str, Artifact]) -> None:
    for name in ("report.json", "report.md", "report.png"):
        if name in artifacts:
            shutil.copyfile(artifacts[name].path, run_dir / f".{name}.copy")
            (run_dir / f".{name}.copy").replace(run_dir / name)
    atomic_write_json(run_dir / "run.json", {
        "name": config.name, "finished": _now(), "pipeline": config.model_dump(mode="json"),
        "data": data_dir.name,
        "stages": [{"index": r.index, "kind": r.kind, "folder": r.folder.name, "status": r.status,
                    "seconds": round(r.seconds, 1)} for r in records],
        "artifacts": {n: str(a.path.relative_to(run_dir)) for n, a in artifacts.items()},
    })
