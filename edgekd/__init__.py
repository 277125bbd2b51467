"""edgekd: prune, distil, export, quantize and benchmark Hugging Face encoders for edge CPUs.

The top level stays light (no torch import) so that `edgekd --help` and the ONNX-only benchmark
worker start fast; heavy modules are imported by the functions that need them.
"""

from edgekd.bench.config import BenchConfig
from edgekd.bundle.config import BundleConfig
from edgekd.config import ModelConfig, PipelineConfig, load_pipeline, validate_pipeline
from edgekd.data.config import DataConfig
from edgekd.distill.config import DistillConfig
from edgekd.export.config import ExportConfig
from edgekd.prune.config import PruneConfig
from edgekd.quantize.config import QuantizeConfig
from edgekd.report.config import ReportConfig
from edgekd.teacher.config import TeacherConfig
from edgekd.version import __version__


def run_pipeline(config: PipelineConfig, **kwargs):
    """Run (or resume) a validated pipeline; see :func:`edgekd.pipeline.run_pipeline`."""
    from edgekd.pipeline import run_pipeline as _run

    return _run(config, **kwargs)


__all__ = [
    "BenchConfig", "BundleConfig", "DataConfig", "DistillConfig", "ExportConfig", "ModelConfig", "PipelineConfig",
    "PruneConfig", "QuantizeConfig", "ReportConfig", "TeacherConfig", "__version__", "load_pipeline", "run_pipeline",
    "validate_pipeline",
]
