"""Deterministic batching: the batch at a step depends only on (seed, step), which makes
resuming exact. Each epoch is a seeded permutation; its last incomplete batch is dropped.
"""
import functools

import numpy as np

from distill_jax.errors import InputError


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
  if batch_size > num_examples:
    raise InputError(f"batch_size {batch_size} is larger than the {num_examples} training examples")
  return num_examples // batch_size


@functools.lru_cache(maxsize=4)
def _epoch_order(num_examples: int, seed: int, epoch: int) -> np.ndarray:
  return np.random.default_rng([seed, epoch]).permutation(num_examples)


def batch_indices(num_examples: int, batch_size: int, seed: int, step: int) -> np.ndarray:
  per_epoch = steps_per_epoch(num_examples, batch_size)
  epoch, index = divmod(step, per_epoch)
  start = index * batch_size
  return _epoch_order(num_examples, seed, epoch)[start:start + batch_size]


def local_indices(num_examples: int, batch_size: int, seed: int, step: int,
                  process_index: int = 0, process_count: int = 1) -> np.ndarray:
  """This process's contiguous share of the global batch's indices (multi-host: each host
  reads only its own examples; the global batch is the concatenation in process order)."""
  idx = batch_indices(num_examples, batch_size, seed, step)
  if batch_size % process_count:
    raise InputError(f"batch_size {batch_size} does not split over {process_count} processes")
  share = batch_size // process_count
  return idx[process_index * share:(process_index + 1) * share]
