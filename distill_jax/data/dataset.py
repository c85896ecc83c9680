"""The one interface every data source returns: in-memory numpy arrays plus their meaning."""
import dataclasses

import numpy as np

from distill_jax.errors import InputError


@dataclasses.dataclass(frozen=True)
class Dataset:
  """Train and test arrays of one dataset. ``x`` is float32 (N, ...), ``y`` int32 (N,)."""
  name: str
  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  num_classes: int

  def __post_init__(self):
    for split in ("train", "test"):
      x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
      if len(x) == 0:
        raise InputError(f"dataset {self.name!r}: the {split} split is empty")
      if y.ndim != 1 or len(y) != len(x):
        raise InputError(f"dataset {self.name!r}: {split} labels have shape {y.shape}, "
                         f"expected ({len(x)},) to match x of shape {x.shape}")
      if not np.isfinite(x).all():
        raise InputError(f"dataset {self.name!r}: {split} inputs hold "
                         f"{np.size(x) - np.isfinite(x).sum()} non-finite values (NaN or inf)")
      if y.min() < 0 or y.max() >= self.num_classes:
        raise InputError(f"dataset {self.name!r}: {split} labels range over "
                         f"[{y.min()}, {y.max()}], outside [0, {self.num_classes - 1}]")
    if self.x_train.shape[1:] != self.x_test.shape[1:]:
      raise InputError(f"dataset {self.name!r}: train examples have shape "
                       f"{self.x_train.shape[1:]} but test examples {self.x_test.shape[1:]}")

  @property
  def input_shape(self) -> tuple[int, ...]:
    return tuple(self.x_train.shape[1:])


def seeded_split(x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int):
  """A seeded (not stratified) split: the same (x, y, fraction, seed), the same split."""
  if not 0.0 < test_fraction < 1.0:
    raise InputError(f"test_fraction must be in (0, 1), got {test_fraction}")
  order = np.random.default_rng(seed).permutation(len(x))
  n_test = max(1, int(round(len(x) * test_fraction)))
  test, train = order[:n_test], order[n_test:]
  return x[train], y[train], x[test], y[test]
