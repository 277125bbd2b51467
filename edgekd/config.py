"""The pipeline file: model, data, seed and an ordered list of stages (a union tagged by `kind`).

Validation happens before anything runs: unknown keys, out-of-range values and a stage order that
cannot work (quantize before export) are reported as one line naming the field.
"""

from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import Field, ValidationError, model_validator

from edgekd._config_base import StrictModel
from edgekd.data.config import DataConfig, TextDataConfig
from edgekd.errors import ConfigError
from edgekd.stages import STAGES

# The task family decides what `data` means: labelled texts for a classifier, plain documents for a causal LM.
DATA_CONFIGS: dict[str, type[StrictModel]] = {"text-classification": DataConfig, "causal-lm": TextDataConfig}

StageConfig = Annotated[Union[tuple(entry.config for entry in STAGES.values())], Field(discriminator="kind")]


class ModelConfig(StrictModel):
    source: str = Field("builtin:all-MiniLM-L6-v2", description="builtin:NAME, a local model folder, or hub:ORG/NAME")
    max_length: int = Field(128, ge=8, le=4096, description="longest tokenised input; longer texts are truncated")
    allow_pickle: bool = Field(False, description="accept a model folder whose only weights are pytorch_model.bin "
                               "(a pickle, which can run code when loaded); trust its source first")


class PipelineConfig(StrictModel):
    # A plain folder name: no separators, and not "." or ".." (those would write outside output_dir).
    name: str = Field("edgekd-run", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=128,
                      description="run name (the run folder's name): letters, digits, _ . -, starting with a letter "
                                  "or digit")
    seed: int = Field(0, ge=0, description="seed for splits, initialisation and shuffling")
    output_dir: str = Field("runs", description="parent folder of run directories")
    task: Literal["text-classification", "causal-lm"] = Field(
        "text-classification", description="task family: text-classification (an encoder with a classification "
        "head, labelled texts) or causal-lm (a decoder language model, plain documents)")
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig | TextDataConfig = Field(default_factory=DataConfig, description="the task's data (its fields "
                                              "depend on task)")
    stages: list[StageConfig] = Field(min_length=1, description="stages, run in order")

    # The task is left out of classification dumps, as it was before it existed (the report's key reads the dump).
    _omit_if = {"task": "text-classification"}

    @model_validator(mode="before")
    @classmethod
    def _sections_follow_task(cls, values: Any) -> Any:
        """Validate `data` with the task's own data config (a key of the other task is an unknown key), and give
        every stage with an `lm:` section one for a causal LM, so its settings have their defaults."""
        if not isinstance(values, dict):
            return values
        task = values.get("task", "text-classification")
        if task not in DATA_CONFIGS:
            return values  # the Literal reports the unknown task
        data = values.get("data", {})
        if not isinstance(data, StrictModel):
            try:
                data = DATA_CONFIGS[task].model_validate(data)
            except ValidationError as exc:
                message = _format_error(exc, DATA_CONFIGS[task])
                raise ValueError(f"data.{message}" if exc.errors()[0]["loc"] else f"data: {message}") from None
        elif not isinstance(data, DATA_CONFIGS[task]):
            raise ValueError(f"data: a {type(data).__name__} does not fit task {task!r}; it takes "
                             f"{DATA_CONFIGS[task].__name__}")
        values = {**values, "data": data}
        stages = values.get("stages")
        if task == "causal-lm" and isinstance(stages, list):
            values["stages"] = [{**stage, "lm": {}} if isinstance(stage, dict) and stage.get("kind") in STAGES
                                and "lm" in STAGES[stage["kind"]].config.model_fields and stage.get("lm") is None
                                else stage
                                for stage in stages]
        return values

    @model_validator(mode="after")
    def _stage_order_works(self) -> "PipelineConfig":
        available: set[str] = set()
        kinds = [s.kind for s in self.stages]
        for i, stage in enumerate(self.stages):
            if kinds.count(stage.kind) > 1:
                raise ValueError(f"stage kind {stage.kind!r} appears more than once")
            if self.task not in STAGES[stage.kind].tasks:
                raise ValueError(f"stage {i + 1} ({stage.kind}) does not support task {self.task!r} yet; stages for "
                                 f"{self.task}: {', '.join(k for k, e in STAGES.items() if self.task in e.tasks)}")
            problem = stage.task_problem(self) if hasattr(stage, "task_problem") else None
            if problem:
                raise ValueError(f"stage {i + 1} ({stage.kind}): {problem}")
            missing = [r for r in stage.requires() if r not in available]
            if missing:
                raise ValueError(
                    f"stage {i + 1} ({stage.kind}) needs {', '.join(missing)}, which no earlier stage produces "
                    f"(available then: {', '.join(sorted(available)) or 'nothing'})"
                )
            available.update(stage.provides())
        self._bench_has_models_and_report_setting_exists()
        return self

    def _bench_has_models_and_report_setting_exists(self) -> None:
        """Cross-stage rules that would otherwise fail only after hours of training."""
        kinds = [s.kind for s in self.stages]
        if "bench" in kinds:
            earlier = {p for s in self.stages[: kinds.index("bench")] for p in s.provides()}
            models = sorted(p for p in earlier if p in ("teacher", "student") or p.endswith(".onnx") or p == "bundle")
            if not models:
                raise ValueError(f"stage {kinds.index('bench') + 1} (bench) has no model to measure: put a teacher, "
                                 "distill, export or quantize stage before it")
        if "report" in kinds and "bench" in kinds:
            bench = self.stages[kinds.index("bench")]
            report = self.stages[kinds.index("report")]
            settings = bench.latency_settings(self.model.max_length)
            # (a causal LM's report takes the bench's first setting unless one is named)
            lm_default = self.task == "causal-lm" and "latency_setting" not in report.model_fields_set
            if report.latency_setting not in settings and not lm_default:
                raise ValueError(f"report latency_setting {report.latency_setting!r} is not measured by the bench; "
                                 f"it measures: {', '.join(settings)}")

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name


def _format_error(exc: ValidationError, root: type[StrictModel] | None = None) -> str:
    """The first problem, as 'stages.2.head_ratio: Input should be less than 1 (got 1.5)'."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
        allowed = _allowed_keys(err["loc"], root or PipelineConfig)
        if allowed:
            msg += f"; allowed: {', '.join(allowed)}"
    elif err["type"] == "union_tag_invalid":
        kinds = ", ".join(err["ctx"]["expected_tags"].replace("'", "").split(", "))
        return f"{loc}: unknown stage kind {err['ctx']['tag']!r}; allowed: {kinds}"
    elif err["type"] == "union_tag_not_found":
        return f"{loc}: every stage needs a 'kind'"
    given = err.get("input")
    if loc and err["type"] != "extra_forbidden" and not isinstance(given, (dict, list)) and given is not None:
        msg += f" (got {given!r})"
    more = len(exc.errors()) - 1
    return (f"{loc}: {msg}" if loc else msg) + (f"  [+{more} more]" if more else "")


def _allowed_keys(loc: tuple, root: type[StrictModel]) -> list[str]:
    """Field names valid at the location of an unknown key, e.g. ('stages', 1, 'prune', 'typo')."""
    stage_classes = {kind: entry.config for kind, entry in STAGES.items()}
    model: Any = root
    for part in loc[:-1]:
        if isinstance(part, int) or part == "stages":
            continue
        if part in stage_classes:
            model = stage_classes[part]
            continue
        field = model.model_fields.get(part)
        model = field.annotation if field is not None else None
        if not (isinstance(model, type) and issubclass(model, StrictModel)):
            return []
    return list(model.model_fields)


def parse_value(text: str) -> Any:
    """An override's value, read as YAML: 3 -> int, 0.5 -> float, [1,2] -> list, abc -> str."""
    return yaml.safe_load(text) if text != "" else ""


def apply_override(data: dict, dotted: str, value: Any) -> None:
    """Set ``a.b.c=v`` in nested dicts; a stage can be addressed by index or by its kind: stages.prune.head_ratio."""
    parts = dotted.split(".")
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            node = _list_item(node, part, ".".join(parts[: i + 1]))
        else:
            node = node.setdefault(part, {})
            if not isinstance(node, (dict, list)):
                raise ConfigError(f"override {dotted}: {'.'.join(parts[: i + 1])} is not a section")
    leaf = parts[-1]
    if isinstance(node, list):
        raise ConfigError(f"override {dotted}: name a field of a stage, e.g. stages.prune.head_ratio=0.5")
    node[leaf] = value


def _list_item(items: list, key: str, where: str) -> dict:
    if key.isdigit() and int(key) < len(items):
        return items[int(key)]
    for item in items:
        if isinstance(item, dict) and item.get("kind") == key:
            return item
    raise ConfigError(f"override: no stage {key!r} at {where}")


def load_pipeline(path: str | Path, overrides: list[str] = ()) -> PipelineConfig:
    """Read a pipeline YAML, apply ``key=value`` overrides and validate the result."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"pipeline file {str(path)!r} not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of name, seed, model, data, stages")
    if overrides:
        validate_pipeline(data, where=str(path))  # the file alone: its own errors blame the file
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like key=value, e.g. stages.teacher.epochs=1")
        apply_override(data, key.strip(), parse_value(value))
    # The file was valid, so what fails now was made invalid by the overrides.
    return validate_pipeline(data, where=f"override {' '.join(overrides)}" if overrides else str(path))


def validate_pipeline(data: dict, where: str = "pipeline") -> PipelineConfig:
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{where}: {_format_error(exc)}") from None
