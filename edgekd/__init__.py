"""edgekd: prune, distil, export, quantize and benchmark Hugging Face encoders for edge CPUs.

The top level stays light (no torch import) so that `edgekd --help` and the ONNX-only benchmark
worker start fast; heavy modules are imported by the functions that need them.
"""

from edgekd.config import PipelineConfig, load_pipeline, validate_pipeline
from edgekd.version import __version__


def run_pipeline(config: PipelineConfig, **kwargs):
    """Run (or resume) a validated pipeline; see :func:`edgekd.pipeline.run_pipeline`."""
    from edgekd.pipeline import run_pipeline as _run

    return _run(config, **kwargs)


__all__ = ["PipelineConfig", "__version__", "load_pipeline", "run_pipeline", "validate_pipeline"]
