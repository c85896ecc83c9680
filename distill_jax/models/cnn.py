"""A small convolutional network over 1-D or 2-D inputs: ``Conv_i`` blocks, ``Dense_j``, a head."""
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp


class CNN(nn.Module):
  """Conv+ReLU(+avg-pool 2) blocks, then Dense layers; the head is the last ``Dense``.

  ``kernel_size`` sets the number of spatial dimensions: ``(3, 3)`` for images (N, H, W[, C]),
  ``(5,)`` for sequences (N, T[, C]). Inputs without a channel axis get one.
  """
  num_classes: int
  channels: Sequence[int] = (32, 64)
  hidden: Sequence[int] = (128,)
  kernel_size: Sequence[int] = (3, 3)
  pool: bool = True

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    spatial = len(self.kernel_size)
    if x.ndim == spatial + 1:
      x = x[..., None]
    for i, c in enumerate(self.channels):
      x = nn.relu(nn.Conv(c, tuple(self.kernel_size), name=f"Conv_{i}")(x))
      if self.pool and min(x.shape[1:-1]) >= 2:
        x = nn.avg_pool(x, (2,) * spatial, strides=(2,) * spatial)
    x = x.reshape((x.shape[0], -1))
    for j, width in enumerate(self.hidden):
      x = nn.relu(nn.Dense(width, name=f"Dense_{j}")(x))
    return nn.Dense(self.num_classes, name=f"Dense_{len(self.hidden)}")(x)
