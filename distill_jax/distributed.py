"""Multi-host runs through JAX's multi-controller runtime.

Every host runs the same command; ``jax.distributed.initialize`` connects them, after which
``jax.devices()`` lists the devices of all hosts, the mesh spans them, and each host feeds
only its own slice of every global batch (``data.local_indices``). Orbax coordinates the
checkpoint writes; files such as ``summary.json`` are written by process 0.

- TPU pod slice, GPU clusters under SLURM or Open MPI: ``--config.distributed.auto=True``
  (JAX detects coordinator, process count and id from the environment).
- Anything else (and the tests, on CPU over loopback): give ``coordinator_address``
  (``host:port`` of process 0), ``num_processes`` and this process's ``process_id``.
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


def is_main_process() -> bool:
  return jax.process_index() == 0
