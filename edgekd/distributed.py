"""Data-parallel training under torchrun (or `accelerate launch`), with PyTorch's own DDP.

A launcher starts one process per GPU and sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR; nothing
here launches processes. :func:`init_from_env` joins the process group (nccl on CUDA, gloo on CPU)
and pins each rank to its GPU; edgekd.train.fit then wraps the model in
torch.nn.parallel.DistributedDataParallel and gives each rank a slice of every *global* batch, so
the run optimises what one process would on the same global batch (see :func:`slice_weight`): exactly
for losses that average over examples (cross-entropy, soft targets, a causal LM's full windows); the
token-averaged hidden-state / attention / relation terms of classifier distillation are weighted by
examples, exact only when every slice holds as many real tokens; the contrastive term is refused.
Launch with torchrun or `accelerate launch`: they stop every rank when one fails (a home-made launcher
would leave the others waiting at a barrier).
Without those variables (or with WORLD_SIZE=1) every function here is a no-op and fit() is unchanged.

The helpers at the end (:func:`main_then_share`, :func:`wait_for_main`, :func:`scratch_dir`) are for
a rank-aware runner: rank 0 writes the run directory, the other ranks wait and then read what it
wrote, and all ranks run the training stages together.

DDP keeps a full copy of the model, its gradients and its AdamW state on every GPU (about 16 bytes per
parameter in fp32). With ``data_parallel: fsdp`` (:func:`sharded_copy`) fit() trains a copy sharded by
PyTorch's FSDP2 (``fully_shard``): each transformer block (see :func:`sharding_units`) and then the
rest of the model become units whose weights, gradients and optimizer
state are split across the ranks, gathered only while a unit runs. The gradient average and the batch slicing
are DDP's, so the loss curve is the same. Learned projections beside the model (classifier distillation's
hidden-state / contrastive terms) are refused under FSDP; a frozen distillation teacher stays a full copy per
rank (inference needs a quarter of training's memory, less in bf16).
"""

import atexit
import copy
import hashlib
import itertools
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from edgekd.errors import ConfigError, DataError

log = logging.getLogger(__name__)
# Rank 0 may run a long non-training stage (export, bench) while the others wait for it.
WAIT_TIMEOUT = timedelta(hours=24)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """Several processes train together."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """This process logs and writes files."""
        return self.rank == 0


SINGLE = DistInfo()


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r}: must be an integer (set by torchrun)") from None


def info_from_env() -> DistInfo:
    """This process's rank and world from the launcher's variables (single process when absent)."""
    world = _env_int("WORLD_SIZE")
    if world is None or world <= 1:
        return SINGLE
    rank, local = _env_int("RANK"), _env_int("LOCAL_RANK")
    if rank is None or local is None:
        raise ConfigError(f"WORLD_SIZE={world} but RANK or LOCAL_RANK is not set: launch with torchrun "
                          "(or accelerate launch), which sets all three")
    return DistInfo(rank, world, local)


def init_from_env(device: torch.device | None = None) -> DistInfo:
    """Join the process group if launched with several processes (idempotent); returns this rank.

    On CUDA this also makes LOCAL_RANK's GPU the current device, so a plain ``torch.device("cuda")``
    means this rank's GPU from here on: call it before moving any model to the GPU.
    """
    info = info_from_env()
    if not info.enabled:
        return info
    cuda = torch.cuda.is_available() and (device is None or device.type == "cuda")
    if cuda:
        torch.cuda.set_device(info.local_rank)
    if not dist.is_initialized():
        # Both backends on a GPU host: NCCL for CUDA tensors, gloo for a stage that trains on the CPU.
        dist.init_process_group(backend="cpu:gloo,cuda:nccl" if cuda else "gloo")
        # Leave the group before the interpreter exits (see end_process for why that alone is not enough).
        atexit.register(_leave_process_group)
        log.info("rank %d/%d joined the %s process group", info.rank, info.world_size, dist.get_backend())
    elif dist.get_world_size() != info.world_size:
        raise ConfigError(f"a process group of {dist.get_world_size()} ranks is already initialised but "
                          f"WORLD_SIZE={info.world_size}")
    return info


def _leave_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def end_process(code: int) -> None:
    """End a launcher's worker process once its work is done: exit handlers, flushed streams, then ``os._exit``.

    Why not a plain exit: DDP's reducer and FSDP's device mesh hold references to gloo process groups, so
    destroy_process_group() only unregisters them; the C++ groups and their worker threads are then freed during
    interpreter finalisation, which now and then aborts a rank that has finished and written everything
    ("terminate called without an active exception", exit code -6), and the launcher reports the run failed.
    Python's exit handlers still run first (leaving the group, removing temporary folders); only the C++ teardown
    after them is skipped. Without a process group (one plain process) this returns and the caller exits normally.
    """
    if not dist.is_initialized():
        return
    atexit._run_exitfuncs()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


def local_device(device: torch.device, info: DistInfo) -> torch.device:
    """``device`` for this rank: cuda becomes cuda:LOCAL_RANK under a launcher."""
    if info.enabled and device.type == "cuda":
        return torch.device("cuda", info.local_rank)
    return device


class _LossModule(nn.Module):
    """The model and the extra modules (projections) as one module whose forward is the loss.

    DDP only reduces gradients of modules whose forward it runs; the projections are called inside
    loss_fn, so the loss itself runs inside DDP's forward. loss_fn still receives the plain model.
    """

    def __init__(self, model: nn.Module, extra_modules: list[nn.Module], loss_fn: Callable):
        super().__init__()
        self.model = model
        self.extra = nn.ModuleList(extra_modules)
        self.loss_fn = loss_fn

    def forward(self, batch: dict[str, torch.Tensor], idx: list[int], labels: torch.Tensor | None) -> torch.Tensor:
        return self.loss_fn(self.model, batch, idx, labels)


def loss_step(model: nn.Module, extra_modules: list[nn.Module], loss_fn: Callable, info: DistInfo,
              device: torch.device) -> Callable:
    """``step(batch, idx, labels) -> loss``: loss_fn itself, or the loss inside DistributedDataParallel."""
    if not info.enabled:
        return lambda batch, idx, labels: loss_fn(model, batch, idx, labels)
    wrapped = nn.parallel.DistributedDataParallel(
        _LossModule(model, list(extra_modules), loss_fn),  # rank 0's weights are broadcast here
        device_ids=[device.index] if device.type == "cuda" else None)
    return wrapped


def seed_per_rank(info: DistInfo) -> None:
    """Every rank was seeded alike; a different stream per rank keeps dropout masks independent across slices."""
    if info.rank:
        torch.manual_seed(torch.initial_seed() + info.rank)


def sharding_units(model: nn.Module) -> list[nn.Module]:
    """The modules FSDP shards one by one: every instance of the classes the model lists in _no_split_modules
    (Hugging Face's name for its repeated blocks, e.g. LlamaDecoderLayer), else the entries of its longest
    ModuleList of one class (the layer stack, e.g. a BERT encoder's BertLayer list)."""
    names = set(getattr(model, "_no_split_modules", None) or [])
    units = [m for m in model.modules() if type(m).__name__ in names]
    if units:
        return units
    stacks = [list(m) for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) > 1
              and len({type(x) for x in m}) == 1]
    return max(stacks, key=len, default=[])


def sharded_copy(model: nn.Module, extra_modules, device: torch.device) -> nn.Module:
    """A copy of ``model`` sharded across the ranks with FSDP2 on ``device`` (one unit per block, then the rest).

    A copy, so ``model`` itself stays a plain module (fit() loads the gathered best weights into it); it is
    copied where it is (the CPU, as loaded) and fully_shard moves only each rank's shards to ``device``. Rank
    0's weights are broadcast first, as DDP does, so every rank shards the same model. Tied weights (an LM
    head tied to its embedding) stay tied: both live in the root unit.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    if list(extra_modules):
        raise ConfigError("data_parallel: fsdp shards the trained model only; the loss terms with learned "
                          "projections beside it (hidden-state, contrastive) need data_parallel: ddp")
    units = sharding_units(model)
    if not units:
        raise ConfigError(f"data_parallel: fsdp needs the model's transformer blocks ({type(model).__name__} names "
                          "none in _no_split_modules and has no layer list); use data_parallel: ddp")
    work = copy.deepcopy(model)
    for tensor in work.state_dict().values():  # [a CPU tensor each]: gloo broadcasts them on either host
        dist.broadcast(tensor, src=0)
    # The mesh names the device type: on a GPU host a stage with device cpu still shards on the CPU.
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    units = sharding_units(work)
    for unit in reversed(units):  # (modules() lists parents first; FSDP2 shards the innermost first)
        fully_shard(unit, mesh=mesh)
    fully_shard(work, mesh=mesh)
    log.info("FSDP: %d blocks and the root sharded across %d ranks on %s", len(units), dist.get_world_size(),
             device.type)
    return work


def full_state_dict(sharded: nn.Module) -> dict[str, torch.Tensor]:
    """The whole, unsharded state dict of an FSDP model on the CPU of every rank, gathered one tensor at a
    time (never the whole model on the device at once). A collective: every rank calls it, in the same order."""
    out = {}
    for name, value in sharded.state_dict().items():
        full = value.full_tensor() if hasattr(value, "full_tensor") else value  # DTensor shards -> the tensor
        out[name] = full.detach().cpu().clone()
    return out


def slice_weight(idx: list[int], info: DistInfo) -> tuple[list[int], float] | None:
    """This rank's examples of a global batch and the factor its loss is scaled by; None: skip the batch.

    Rank r takes idx[r::world] (strided, so length-sorted batches give every rank similar lengths).
    With per-example-mean losses l_r over n_r examples, scaling by w_r = n_r * world / N makes DDP's
    mean all-reduce equal the global mean's gradient: (1/world) * sum_r w_r grad l_r = sum_r (n_r/N) grad l_r.
    So an uneven last batch is exact too; a batch with fewer examples than ranks (some rank would
    have none) is skipped on every rank alike (the batch order is seeded, the same on every rank).
    """
    if not info.enabled:
        return idx, 1.0
    if len(idx) < info.world_size:
        return None
    part = idx[info.rank :: info.world_size]
    return part, len(part) * info.world_size / len(idx)


def _digest(ids: list[list[int]], labels: list[int] | None) -> str:
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    tokens = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64, count=int(lengths.sum()))
    h = hashlib.blake2b(lengths.tobytes(), digest_size=16)
    h.update(tokens.tobytes())
    h.update(np.asarray(labels if labels is not None else [], dtype=np.int64).tobytes())
    return h.hexdigest()


def check_same_data(ids: list[list[int]], labels: list[int] | None, info: DistInfo) -> None:
    """Every rank must hold the same training examples (each rank slices global batches of its own copy).

    Each rank builds them itself (seeded); a sampled step that is not reproducible on the device (e.g.
    teacher-written text) could make them differ, which would train on a silently wrong mix: refuse it.
    """
    if not info.enabled:
        return
    digests: list[tuple[int, str] | None] = [None] * info.world_size
    dist.all_gather_object(digests, (len(ids), _digest(ids, labels)))
    bad = [r for r, d in enumerate(digests) if d != digests[0]]
    if bad:
        raise DataError(f"training data differ across ranks: rank {bad[0]} has {digests[bad[0]][0]} examples "
                        f"(digest {digests[bad[0]][1][:8]}), rank 0 has {digests[0][0]} ({digests[0][1][:8]}); every "
                        "rank must build the same examples: use a deterministic (seeded, do_sample: false) setting "
                        "for anything sampled before training")


def global_loss(loss: torch.Tensor, weight: float, info: DistInfo) -> float:
    """The global batch's mean loss: sum over ranks of l_r * n_r / N (the same value on every rank)."""
    if not info.enabled:
        return loss.item()
    value = loss.detach().float() * (weight / info.world_size)
    dist.all_reduce(value)
    return value.item()


def from_main(obj, info: DistInfo):
    """Rank 0's ``obj`` on every rank (e.g. validation scores, so every rank keeps the same epoch)."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


@cache
def _wait_group():
    # gloo with a long timeout: NCCL collectives time out after minutes, and this wait may take hours.
    return dist.new_group(backend="gloo", timeout=WAIT_TIMEOUT)


def wait_for_main(info: DistInfo) -> None:
    """Every rank blocks until all reach this point: rank 0 calls it after writing, the others before reading."""
    if info.enabled:
        dist.barrier(group=_wait_group())


def main_then_share(fn: Callable, info: DistInfo):
    """Rank 0 runs ``fn()`` (e.g. writes the data folder) while the others wait; every rank gets its result."""
    if not info.enabled:
        return fn()
    box = [fn() if info.is_main else None]
    dist.broadcast_object_list(box, src=0, group=_wait_group())
    return box[0]


@contextmanager
def scratch_dir(real: Path, info: DistInfo) -> Iterator[Path]:
    """``real`` on rank 0; a private temporary folder (deleted afterwards) on the other ranks, which run
    the same training stage but must not write the run directory."""
    if info.is_main:
        yield real
        return
    tmp = Path(tempfile.mkdtemp(prefix=f"edgekd-rank{info.rank}-"))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
