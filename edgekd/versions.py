"""Library versions and machine facts recorded in manifests and reports."""

import os
import platform
from importlib import metadata

from edgekd.version import __version__

_PACKAGES = ("torch", "transformers", "tokenizers", "optimum", "optimum-onnx", "onnx", "onnxruntime", "torch-pruning",
             "numpy", "pydantic", "matplotlib")


def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def library_versions(names: tuple[str, ...] = _PACKAGES) -> dict[str, str]:
    return {"edgekd": __version__, "python": platform.python_version(), **{n: package_version(n) for n in names}}


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


def machine_fingerprint() -> dict:
    """What makes a timing belong to one machine: the host, its CPU, memory and GPUs (a benchmark key part)."""
    import torch

    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return {**machine_info(), "host": platform.node(), "gpus": gpus}
