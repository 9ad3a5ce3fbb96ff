"""torch.distributed for one entry point launched any way: a plain process, torchrun
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``) or a SLURM task
(``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURM_LOCALID``, as the submitit launcher starts
one task per GPU)."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class ProcessGroup:
    """Where this process stands: rank 0 of 1 when not distributed."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def launch_environment() -> ProcessGroup:
    """The rank, world size and local rank the launcher gave this process."""
    env = os.environ
    if "WORLD_SIZE" in env and "RANK" in env:  # torchrun, or a launcher that mimics it
        return ProcessGroup(int(env["RANK"]), int(env["WORLD_SIZE"]),
                            int(env.get("LOCAL_RANK", 0)))
    if int(env.get("SLURM_NTASKS", 1)) > 1 and "SLURM_PROCID" in env:
        return ProcessGroup(int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]),
                            int(env.get("SLURM_LOCALID", 0)))
    return ProcessGroup()


def first_slurm_host(nodelist: str) -> str:
    """The first host of a SLURM node list (``node[03-05,07]`` -> ``node03``)."""
    try:
        hosts = subprocess.run(["scontrol", "show", "hostnames", nodelist], check=True,
                               capture_output=True, text=True).stdout.split()
        return hosts[0]
    except (OSError, subprocess.CalledProcessError, IndexError):
        match = re.match(r"([^\[,]+)(?:\[([^\]-,]+))?", nodelist)
        return match.group(1) + (match.group(2) or "")


def init_distributed(device: torch.device) -> ProcessGroup:
    """Join the process group the launcher set up (NCCL on CUDA, gloo on CPU); a process
    started without a launcher stays as it is. Under SLURM the rendezvous is the job's
    first node, on a port derived from the job id, so that two jobs on one node do not
    collide."""
    group = launch_environment()
    # torchrun's single process joins too (its collectives then run, on one rank)
    if dist.is_initialized() or not (group.distributed or "TORCHELASTIC_RUN_ID" in os.environ):
        return group
    if "MASTER_ADDR" not in os.environ:
        os.environ["MASTER_ADDR"] = first_slurm_host(os.environ.get("SLURM_JOB_NODELIST",
                                                                    "127.0.0.1"))
        os.environ["MASTER_PORT"] = str(20000 + int(os.environ.get("SLURM_JOB_ID", 0)) % 20000)
    if device.type == "cuda":
        torch.cuda.set_device(group.local_rank)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                            rank=group.rank, world_size=group.world_size)
    return group


def process_device(device: torch.device, group: ProcessGroup) -> torch.device:
    """Each process of a node drives its own GPU."""
    if device.type == "cuda" and group.distributed:
        return torch.device("cuda", group.local_rank)
    return device


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all processes in place (nothing to do when not distributed)."""
    if dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_sums(tensors: list[torch.Tensor]) -> None:
    """Sum each of ``tensors`` over all processes in place, in one collective: they are
    packed into one float64 buffer (exact for counts below 2**53) on their own device,
    which must be the one the process group serves (NCCL refuses CPU tensors)."""
    if not dist.is_initialized():
        return
    packed = torch.cat([tensor.reshape(-1).to(torch.float64) for tensor in tensors])
    dist.all_reduce(packed, op=dist.ReduceOp.SUM)
    for tensor, summed in zip(tensors, packed.split([t.numel() for t in tensors]),
                              strict=True):
        tensor.copy_(summed.view_as(tensor))


def broadcast_from_main(value: object) -> object:
    """Rank 0's ``value`` on every process (e.g. the run folder, whose name holds a time
    that each process read for itself)."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
