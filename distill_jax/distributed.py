"""Multi-host runs (JAX's multi-controller runtime): every host runs the same command and feeds
its own slice of each batch. ``distributed.auto=True`` on TPU pods, SLURM or Open MPI; else
``coordinator_address``, ``num_processes`` and ``process_id``.
"""
import logging

import jax


def initialize(config) -> None:
  """Connect this process to the others if ``config.distributed`` asks for it (idempotent)."""
  d = config.get("distributed")
  if not d or not (d.get("auto") or d.get("coordinator_address")):
    return
  if jax.distributed.is_initialized():
    return
  if d.get("cpu_collectives"):
    # CPU devices of different processes talk over gloo (TCP): for tests and CPU clusters.
    jax.config.update("jax_cpu_collectives_implementation", d.cpu_collectives)
  if d.get("auto"):
    jax.distributed.initialize()
  else:
    jax.distributed.initialize(d.coordinator_address, int(d.num_processes), int(d.process_id),
                               initialization_timeout=int(d.get("timeout", 300)))
  logging.info("process %d of %d; %d local and %d global devices", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())
