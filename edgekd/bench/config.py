from typing import Literal

from pydantic import Field

from edgekd._config_base import StrictModel


class BenchConfig(StrictModel):
    """Latency, throughput, peak memory, size and accuracy of every model the run produced."""

    kind: Literal["bench"] = "bench"
    warmup: int = Field(10, ge=1, le=10_000, description="untimed runs before each measurement")
    runs: int = Field(100, ge=10, le=100_000, description="timed batch-1 runs per setting (at least)")
    min_seconds: float = Field(3.0, ge=0.0, le=600.0,
                               description="keep timing each setting until this much time is measured "
                                           "(fast models get more runs, so a short disturbance weighs less)")
    fixed_length: int = Field(128, ge=8, le=4096, description="token length of the fixed-length latency setting")
    throughput_batch: int = Field(32, ge=2, le=4096, description="batch size of the throughput setting")
    throughput_batches: int = Field(8, ge=1, le=10_000, description="timed batches for throughput")
    threads: list[int] = Field([1, 0], min_length=1, description="intra-op thread counts; 0 means all cores")
    eval_batch_size: int = Field(64, ge=1, le=4096, description="batch size for accuracy on the test split")
    cuda: Literal["auto", "off"] = Field("auto", description="auto: also time the teacher on CUDA when a GPU is there")

    def requires(self) -> list[str]:
        return []

    def provides(self) -> list[str]:
        return ["bench.json"]
