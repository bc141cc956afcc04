"""Training on many GPUs (or CPU processes): PyTorch DistributedDataParallel under torchrun.

    torchrun --nproc_per_node=4 -m mtk train --preset paper --data /data/vocaset --pretrained ./hubert-base-ls960

torchrun starts one process per GPU and sets RANK, LOCAL_RANK and WORLD_SIZE; `init_from_env` joins them into
one process group (NCCL on CUDA, gloo on the CPU) and gives each its own GPU. `train.fit` then wraps the model in
`torch.nn.parallel.DistributedDataParallel` (gradients are averaged across processes after every backward) and
hands every process its share of each batch: the batch the single-process run would draw, `world` times as
large, cut into contiguous shares (`ShardedBatches`), so N processes at batch size B train like one process at
batch size N x B with the same data order. Only the first process writes checkpoints, recipe.json and the model
folder; the others wait for it (`barrier`). Logged losses are averaged across processes.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """(rank, number of processes); (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    return world()[0] == 0


def barrier() -> None:
    if world()[1] > 1:
        dist.barrier()


def shutdown() -> None:
    """Leave the process group when a run ends (every process together), so no process exits while the
    backend's threads still talk to the others (gloo aborts such an exit: "terminate called without an active
    exception")."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def main_first(fn):
    """fn() in the first process, then in the others (what writes shared files: data generation, the encoder's
    pretraining), so they read what it wrote instead of racing to write it."""
    rank, size = world()
    if size > 1 and rank > 0:
        dist.barrier()
    out = fn()
    if size > 1 and rank == 0:
        dist.barrier()
    return out


def init_from_env(device: str) -> str:
    """Join the process group torchrun describes (WORLD_SIZE > 1) and return this process's device: on CUDA,
    cuda:<LOCAL_RANK>; else the device given. Outside torchrun: nothing, `device` back."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1 or (dist.is_initialized()):
        return device
    cuda = device.startswith("cuda")
    if cuda:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    return device


def average(values: dict[str, float]) -> dict[str, float]:
    """The mean of each value over the processes (every process gets it)."""
    if world()[1] == 1 or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64)
    dist.all_reduce(t)
    return {k: float(v) / world()[1] for k, v in zip(keys, t)}


class ShardedBatches:
    """This process's contiguous share of each global batch of a batch sampler (lists of indices): shares
    differ in size by one at most. A last batch too small to give every process an item is dropped by all of
    them alike (DDP needs every process to step together)."""

    def __init__(self, batches, rank: int, size: int):
        self.batches = [list(b) for b in batches if len(b) >= size]     # the same on every process
        self.rank, self.size = rank, size

    def __iter__(self):
        for b in self.batches:
            k, r = divmod(len(b), self.size)
            start = self.rank * k + min(self.rank, r)
            yield b[start:start + k + (self.rank < r)]

    def __len__(self):
        return len(self.batches)
