"""Training on several devices or machines through Lightning's DDP: which process this is, and the batch each gets.

A run with ``devices`` x ``num_nodes`` > 1 trains with one process per device (Lightning's DDP: gradients
averaged across processes each step). Processes come from one of two places, and emfm handles both:

- Lightning starts them: ``emfm train --devices 2`` runs as rank 0, and Lightning re-runs the same command
  for ranks 1.. when training starts, with ``LOCAL_RANK`` / ``NODE_RANK`` set.
- A launcher starts them all at once: ``srun`` (SLURM sets ``SLURM_PROCID``) or ``torchrun`` (``RANK``), one
  process per device, each running the same ``emfm train`` command; pass ``--num-nodes`` to match.

Only rank 0 writes the run directory, scores the test sets (once, over the whole of each: metrics are never
averaged across ranks) and saves the checkpoint; the other ranks train and stop.

``batch_size`` is the *global* batch: each of the W processes gets ``batch_size / W`` items a step, so one run
takes the same steps with the same learning rate whatever W is (W must divide it); the learning rate is not
rescaled. Shuffling differs with W (Lightning's DistributedSampler deals the items out), so results agree
within seed noise, not to the bit.
"""

from __future__ import annotations

import os

from emfm.errors import ConfigError

#: The strategies offered: Lightning's choice (``auto``: DDP on several devices), DDP with processes Lightning
#: starts or a launcher started (``ddp``), or started by forking in-process (``ddp_spawn``, notebooks).
STRATEGIES = ("auto", "ddp", "ddp_spawn")


def world_size(devices: int, num_nodes: int) -> int:
    """The number of training processes."""
    return int(devices) * int(num_nodes)


def per_device_batch(batch_size: int, devices: int, num_nodes: int) -> int:
    """Each process's share of the global ``batch_size``.

    Raises:
        ConfigError: the processes cannot share it evenly.
    """
    world = world_size(devices, num_nodes)
    if batch_size % world:
        raise ConfigError(
            f"batch_size {batch_size} is the global batch and must divide evenly over {world} processes "
            f"(devices {devices} x num_nodes {num_nodes}); use a batch_size that is a multiple of {world}"
        )
    return batch_size // world


def process_rank() -> int:
    """This process's global rank as its launcher set it: ``RANK`` (torchrun), ``SLURM_PROCID`` (srun, where the
    job runs more than one task), else Lightning's ``NODE_RANK`` / ``LOCAL_RANK`` (0 for the first process)."""
    for var in ("RANK",):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    if os.environ.get("SLURM_PROCID", "").isdigit() and int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1:
        return int(os.environ["SLURM_PROCID"])
    local = int(os.environ.get("LOCAL_RANK", "0") or 0)
    node = int(os.environ.get("NODE_RANK", "0") or 0)
    if node == 0:
        return local
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", "0") or 0) or max(1, local + 1)
    return node * per_node + local


def is_primary() -> bool:
    """Whether this process writes the run (rank 0)."""
    return process_rank() == 0


def launcher_share() -> tuple[int, int]:
    """(rank, world size) when a launcher started every process at once (torchrun: ``RANK`` and ``WORLD_SIZE``;
    srun: ``SLURM_PROCID`` and ``SLURM_NTASKS``), else (0, 1).

    Processes Lightning starts itself do not count: rank 0 runs alone until training begins (it fills the
    feature cache by itself), and its later ranks find the cache full.
    """
    for rank_var, world_var in (("RANK", "WORLD_SIZE"), ("SLURM_PROCID", "SLURM_NTASKS")):
        rank, world = os.environ.get(rank_var, ""), os.environ.get(world_var, "")
        if rank.isdigit() and world.isdigit() and int(world) > 1:
            return int(rank), int(world)
    return 0, 1
