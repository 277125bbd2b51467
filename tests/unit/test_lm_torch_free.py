"""The LM benchmark's ONNX and GenAI workers must not load torch: a row's peak RSS would include it."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["edgekd.bench.lm_worker", "edgekd.bench.lm_runners", "edgekd.peer.genai"])
def test_importing_the_worker_side_loads_no_torch(module):
    code = f"import sys, {module}; assert 'torch' not in sys.modules, [m for m in sys.modules if 'torch' in m][:3]"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-500:]
