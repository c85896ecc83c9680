"""Deterministic batching: the batch at a step depends only on (seed, step), which makes
resuming exact. Each epoch is a seeded permutation; its last incomplete batch is dropped.

Length grouping (``group > 0``, with each example's length): each run of ``group`` batches of
the epoch's permutation is sorted by length before it is cut into batches, and the epoch's
batches are then shuffled, so a batch holds sentences of similar length (little padding, for
tasks that cut each batch to its longest row) while what it holds stays random. This is
Hugging Face's ``group_by_length`` (its mega-batches of 50); it is still a function of
(seed, step, lengths).
"""
import functools
from typing import Optional

import numpy as np

from distill_jax.errors import InputError


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
  if batch_size > num_examples:
    raise InputError(f"batch_size {batch_size} is larger than the {num_examples} training examples")
  return num_examples // batch_size


@functools.lru_cache(maxsize=4)
def _epoch_order(num_examples: int, seed: int, epoch: int) -> np.ndarray:
  return np.random.default_rng([seed, epoch]).permutation(num_examples)


def length_grouped_order(lengths: np.ndarray, batch_size: int, seed: int, epoch: int,
                         group: int) -> np.ndarray:
  """The epoch's example order (whole batches only) with length grouping (module docstring):
  batch ``i`` is ``order[i * batch_size:(i + 1) * batch_size]``."""
  lengths = np.asarray(lengths)
  per_epoch = steps_per_epoch(len(lengths), batch_size)
  order = _epoch_order(len(lengths), seed, epoch)[:per_epoch * batch_size]
  chunk = group * batch_size
  runs = [c[np.argsort(-lengths[c], kind="stable")] for c in
          np.split(order, range(chunk, len(order), chunk))]
  batches = np.concatenate(runs).reshape(per_epoch, batch_size)
  # A second stream of the same seed: the batch order must not follow length.
  return batches[np.random.default_rng([seed, epoch, 1]).permutation(per_epoch)].reshape(-1)


_GROUPED: dict = {}          # (lengths' bytes hash, batch_size, seed, epoch, group) -> order


def _grouped(lengths: np.ndarray, batch_size: int, seed: int, epoch: int,
             group: int) -> np.ndarray:
  key = (hash(np.asarray(lengths).tobytes()), len(lengths), batch_size, seed, epoch, group)
  if key not in _GROUPED:
    if len(_GROUPED) >= 4:
      _GROUPED.pop(next(iter(_GROUPED)))
    _GROUPED[key] = length_grouped_order(lengths, batch_size, seed, epoch, group)
  return _GROUPED[key]


def batch_indices(num_examples: int, batch_size: int, seed: int, step: int,
                  lengths: Optional[np.ndarray] = None, group: int = 0) -> np.ndarray:
  """The global batch's example indices at ``step``; ``group > 0``: grouped by ``lengths``."""
  per_epoch = steps_per_epoch(num_examples, batch_size)
  epoch, index = divmod(step, per_epoch)
  start = index * batch_size
  if group > 0:
    if lengths is None or len(lengths) != num_examples:
      raise InputError(f"length grouping needs one length per example ({num_examples}), got "
                       f"{None if lengths is None else len(lengths)}")
    order = _grouped(lengths, batch_size, seed, epoch, group)
  else:
    order = _epoch_order(num_examples, seed, epoch)
  return order[start:start + batch_size]


def local_indices(num_examples: int, batch_size: int, seed: int, step: int,
                  process_index: int = 0, process_count: int = 1,
                  lengths: Optional[np.ndarray] = None, group: int = 0) -> np.ndarray:
  """This process's contiguous share of the global batch's indices (multi-host: each host
  reads only its own examples; the global batch is the concatenation in process order)."""
  idx = batch_indices(num_examples, batch_size, seed, step, lengths, group)
  if batch_size % process_count:
    raise InputError(f"batch_size {batch_size} does not split over {process_count} processes")
  share = batch_size // process_count
  return idx[process_index * share:(process_index + 1) * share]
