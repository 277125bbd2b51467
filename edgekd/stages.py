"""The one table of stage kinds: each entry is a config class, the module that runs it, the
pipeline-level settings it reads and the libraries whose versions change its output.

The config union, the runner's cache key and the report all read this table, so a new stage kind
is one entry here plus its folder (config.py, core.py, stage.py).
"""

from dataclasses import dataclass

from edgekd.ablation.config import AblationConfig
from edgekd.bench.config import BenchConfig
from edgekd.bundle.config import BundleConfig
from edgekd.distill.config import DistillConfig
from edgekd.export.config import ExportConfig
from edgekd.mobile.config import MobileConfig
from edgekd.peer.config import PeerConfig
from edgekd.prune.config import PruneConfig
from edgekd.quantize.config import QuantizeConfig
from edgekd.report.config import ReportConfig
from edgekd.teacher.config import TeacherConfig
from edgekd.vocab.config import VocabConfig

TRAINING_LIBS = ("torch", "transformers", "tokenizers")
BOTH = ("text-classification", "causal-lm")


@dataclass(frozen=True)
class StageEntry:
    config: type  # pydantic class with a `kind` literal, requires(), provides() and summary(metrics)
    module: str  # module with run(cfg, ctx); imported only when the stage runs
    # Pipeline-level settings the stage reads: "model" (the model source, by content), "max_length",
    # "seed", "pipeline" (the whole pipeline, for the report), "machine" (the bench's CPU and host).
    reads: tuple[str, ...]
    libraries: tuple[str, ...]
    # Task families the stage runs for (edgekd/tasks); a pipeline with another task is refused before it runs.
    tasks: tuple[str, ...] = ("text-classification",)
    # Calls edgekd.train.fit: under torchrun every rank runs it (DDP); other stages run on rank 0 only.
    trains: bool = False
    # Raised when the stage's code writes something different from the same inputs, so a folder an older
    # edgekd wrote is not reused; in the cache key only when > 0, so keys from before it existed stay valid.
    revision: int = 0


STAGES: dict[str, StageEntry] = {
    "teacher": StageEntry(TeacherConfig, "edgekd.teacher.stage", ("model", "max_length", "seed"), TRAINING_LIBS,
                          BOTH, trains=True),
    "prune": StageEntry(PruneConfig, "edgekd.prune.stage", ("max_length", "seed"), TRAINING_LIBS + ("torch-pruning",),
                        BOTH),
    "distill": StageEntry(DistillConfig, "edgekd.distill.stage", ("max_length", "seed"), TRAINING_LIBS, BOTH,
                          trains=True),
    "ablation": StageEntry(AblationConfig, "edgekd.ablation.stage", ("max_length", "seed"), TRAINING_LIBS, BOTH,
                           trains=True),
    "vocab": StageEntry(VocabConfig, "edgekd.vocab.stage", ("max_length",), TRAINING_LIBS),
    "export": StageEntry(ExportConfig, "edgekd.export.stage", ("max_length",),
                         TRAINING_LIBS + ("optimum", "optimum-onnx", "onnx", "onnxruntime"), BOTH),
    # (1: embedding_bits 4 writes the word table in blocks of 16 with fp16 scales and the position table in blocks)
    "quantize": StageEntry(QuantizeConfig, "edgekd.quantize.stage", ("max_length",),
                           ("transformers", "tokenizers", "onnx", "onnxruntime"), BOTH, revision=1),
    # (torch: the parity gate compares each converted file with the PyTorch model)
    "mobile": StageEntry(MobileConfig, "edgekd.mobile.stage", ("max_length",),
                         TRAINING_LIBS + ("onnx", "onnxruntime")),
    # (torch runs the export)
    "peer": StageEntry(PeerConfig, "edgekd.peer.stage", ("max_length",),
                       TRAINING_LIBS + ("optimum", "optimum-onnx", "onnx", "onnxruntime"), BOTH),
    # (causal-lm: the gate scores the shipped file with onnxruntime)
    # (1: a classifier bundle carries every mobile target's file of the bundled model, not only model.ort)
    "bundle": StageEntry(BundleConfig, "edgekd.bundle.stage", ("max_length",), (), BOTH, revision=1),
    # (1: every row names what runs its kernels, in `delegate`; 2: each converted file's test agreement with PyTorch;
    # 3: batch-1 files' throughput rows say they ran one text at a time)
    "bench": StageEntry(BenchConfig, "edgekd.bench.stage", ("max_length", "seed", "machine"),
                        TRAINING_LIBS + ("onnxruntime", "numpy"), BOTH, revision=3),
    # (1: the Pareto plot across runtimes, and the latency and size plots)
    "report": StageEntry(ReportConfig, "edgekd.report.stage", ("pipeline",), ("matplotlib",), BOTH, revision=1),
}
