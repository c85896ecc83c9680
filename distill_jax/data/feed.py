"""A training phase's batches: in-memory rows picked by (seed, step) (``batches.py``), or a
grain stream (``streaming.py``) when the task's data has a source or host augmentation. Either
way ``batch(step)`` is a function of (seed, step, process), what a checkpoint records of the
data (``meta``) is checked when a run resumes (``check``), and the loop sees one interface.
"""
from typing import Any, Mapping, Optional

import jax
import numpy as np

from distill_jax.data.batches import local_indices, steps_per_epoch
from distill_jax.errors import InputError


def example_lengths(arrays: Mapping[str, np.ndarray]) -> np.ndarray:
  """Each training row's token count (``attention_mask``'s row sums), for length grouping."""
  if "attention_mask" not in arrays:
    raise InputError(f"data.group_by_length needs token rows with an attention_mask; this "
                     f"task's training arrays are {sorted(arrays)}")
  return np.asarray(arrays["attention_mask"]).sum(1)


def open_stream(data_config, source: Any, batch_size: int, seed: int):
  """This process's stream of ``source`` with the config's host-side augmentation."""
  from distill_jax.data import augment, streaming
  d = data_config
  if d.get("group_by_length"):
    raise InputError("data.group_by_length applies to in-memory token rows, not to streamed "
                     f"data (data.source={d.source!r})")
  return streaming.Stream(source, batch_size, seed, jax.process_index(), jax.process_count(),
                          transform=augment.from_config(d.batch_augment),
                          example_transform=augment.example_from_config(d.example_augment),
                          num_workers=d.num_workers)


class HeldOut:
  """A held-out source read in order a batch at a time, never whole in memory (50,000 ImageNet
  images at 224 px are 30 GB as float32): ``len`` and ``take(idx)`` for ``inference.predict``,
  ``["y"]`` the labels (read once). ``example_transform``: each image's preprocessing."""

  def __init__(self, source: Any, example_transform: Any = None):
    self.source, self.example_transform = source, example_transform
    self._labels: Optional[np.ndarray] = None

  def __len__(self) -> int:
    return len(self.source)

  def take(self, idx: np.ndarray) -> dict:
    from distill_jax.data.streaming import read_rows
    return {k: v for k, v in read_rows(self.source, np.asarray(idx),
                                       self.example_transform).items() if k != "y"}

  def __getitem__(self, key: str) -> np.ndarray:
    if key != "y":
      raise KeyError(f"a streamed held-out set gives its labels ('y') whole, not {key!r}: "
                     "read the inputs with take(idx)")
    if self._labels is None:
      self._labels = np.asarray([self.source[i]["y"] for i in range(len(self.source))],
                                np.int32)
    return self._labels


class Feed:
  """The batches of one phase (``data``: the task's TaskData; ``arrays``: its training arrays,
  with cached teacher outputs if any)."""

  def __init__(self, config, data, arrays: Mapping[str, np.ndarray], phase: str):
    self.data, self.arrays, self.phase = data, arrays, phase
    self.seed, self.batch_size = config.seed, config.batch_size
    # in memory, the phase's own rows (a labels-only phase leaves the teacher-only rows out)
    self.num_rows = (data.num_train if data.source is not None
                     else len(next(iter(arrays.values()))))
    self.per_epoch = steps_per_epoch(self.num_rows, self.batch_size)
    self.group = config.data.get("group_by_length", 0)
    self.lengths = example_lengths(arrays) if self.group and data.source is None else None
    self.stream: Optional[Any] = None
    if data.source is not None:
      self.stream = open_stream(config.data, data.source, self.batch_size, self.seed)

  def batch(self, step: int) -> dict:
    """This process's prepared batch at global step ``step``."""
    if self.stream is not None:
      return self.data.prepare(self.stream.batch(step))
    idx = local_indices(self.num_rows, self.batch_size, self.seed, step,
                        jax.process_index(), jax.process_count(), self.lengths, self.group)
    return self.data.rows(idx, self.arrays)

  def meta(self, step: int) -> dict:
    """What a checkpoint at ``step`` records of the data."""
    if self.stream is not None:
      return {"phase": self.phase, "data": self.stream.state(step)}
    epoch, index = divmod(step, self.per_epoch)
    return {"phase": self.phase, "data": {"seed": self.seed, "batch_size": self.batch_size,
                                          "group_by_length": self.group, "epoch": epoch,
                                          "index_in_epoch": index}}

  def check(self, meta: dict) -> None:
    """A resumed stream must read the batches it would have (another seed, batch size or
    dataset is an error naming what differs)."""
    if self.stream is not None and "data" in meta:
      self.stream.check_state(meta["data"])

  def close(self) -> None:
    if self.stream is not None:
      self.stream.close()
