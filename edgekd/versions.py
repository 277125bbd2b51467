"""Library versions and machine facts recorded in manifests and reports."""

import os
import platform
from importlib import metadata

from edgekd.version import __version__

_PACKAGES = ("torch", "transformers", "tokenizers", "optimum", "optimum-onnx", "onnx", "onnxruntime", "torch-pruning",
             "numpy", "pydantic")


def library_versions() -> dict[str, str]:
    versions = {"edgekd": __version__, "python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def machine_info() -> dict:
    """CPU model, core counts and the instruction-set flags that matter for int8 kernels."""
    import cpuinfo
    import psutil

    info = cpuinfo.get_cpu_info()
    flags = set(info.get("flags", []))
    wanted = ("avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512vnni", "avx_vnni", "amx_int8", "neon", "asimddp")
    return {
        "cpu": info.get("brand_raw") or platform.processor(),
        "arch": platform.machine(),
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "cpu_flags": sorted(f for f in wanted if f in flags),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}",
    }
