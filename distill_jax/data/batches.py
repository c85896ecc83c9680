"""Deterministic batching: the batch at a step depends only on (seed, step).

That is what makes resuming exact: a restarted run asks for ``train_batch(ds, b, seed, step)``
at its restored step and gets the very batch the uninterrupted run would have seen. Each epoch
is a fresh seeded permutation; the last incomplete batch of an epoch is dropped so that every
batch has the same shape (one compiled step).
"""
import functools
from typing import Iterator

import numpy as np

from distill_jax.data.dataset import Dataset


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
  if batch_size > num_examples:
    raise ValueError(f"batch_size {batch_size} is larger than the {num_examples} training examples")
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
    raise ValueError(f"batch_size {batch_size} does not split over {process_count} processes")
  share = batch_size // process_count
  return idx[process_index * share:(process_index + 1) * share]


def train_batch(ds: Dataset, batch_size: int, seed: int, step: int, process_index: int = 0,
                process_count: int = 1) -> dict[str, np.ndarray]:
  idx = local_indices(len(ds.x_train), batch_size, seed, step, process_index, process_count)
  return {"x": ds.x_train[idx], "y": ds.y_train[idx]}


def iterate_train(ds: Dataset, batch_size: int, seed: int,
                  start_step: int = 0) -> Iterator[dict[str, np.ndarray]]:
  step = start_step
  while True:
    yield train_batch(ds, batch_size, seed, step)
    step += 1


def eval_batches(x: np.ndarray, y: np.ndarray, batch_size: int,
                 multiple_of: int = 1) -> Iterator[dict[str, np.ndarray]]:
  """Fixed-size batches over all examples; the last one is padded and masked.

  ``batch_size`` is rounded up to a multiple of ``multiple_of`` (the device count) so that
  every batch can be sharded evenly.
  """
  batch_size = -(-batch_size // multiple_of) * multiple_of
  for start in range(0, len(x), batch_size):
    xb, yb = x[start:start + batch_size], y[start:start + batch_size]
    n = len(xb)
    pad = batch_size - n
    mask = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
    if pad:
      xb = np.concatenate([xb, np.zeros((pad,) + xb.shape[1:], xb.dtype)])
      yb = np.concatenate([yb, np.zeros(pad, yb.dtype)])
    yield {"x": xb, "y": yb, "mask": mask}
