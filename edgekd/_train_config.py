"""Fields shared by the stages that train (teacher fine-tuning and distillation)."""

from typing import Literal

from pydantic import Field

from edgekd._config_base import StrictModel


class TrainingFields(StrictModel):
    epochs: int = Field(2, ge=1, le=100, description="maximum epochs over the training split")
    batch_size: int = Field(32, ge=1, le=4096, description="examples per optimisation step")
    learning_rate: float = Field(1e-4, gt=0.0, le=0.1, description="peak AdamW learning rate")
    weight_decay: float = Field(0.01, ge=0.0, le=1.0, description="AdamW weight decay")
    warmup_ratio: float = Field(0.06, ge=0.0, lt=1.0, description="share of steps with linear warm-up")
    patience: int = Field(1, ge=0, le=100, description="epochs without validation gain before stopping early")
    group_by_length: bool = Field(True, description="batch texts of similar length together (less padding, faster)")
    max_steps: int | None = Field(None, ge=1, description="stop after this many steps (None: run all epochs)")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when a GPU is visible, else CPU")
    bf16: bool = Field(True, description="bf16 autocast on CUDA (ignored on CPU)")
    data_parallel: Literal["ddp", "fsdp"] = Field(
        "ddp", description="under torchrun: ddp keeps a full copy of the trained model per GPU; fsdp shards its "
        "parameters, gradients and optimizer state across the GPUs (PyTorch FSDP2, one unit per transformer "
        "block) for a model whose training state does not fit one GPU. Ignored in a single process")

    _omit_if = {"data_parallel": "ddp"}  # configs written before FSDP existed keep their dumps and cache keys
