"""A small convolutional network: ``Conv_i`` blocks, then ``Dense_j`` layers and a head."""
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp


class CNN(nn.Module):
  """Conv(3x3)+ReLU+avg-pool blocks, then Dense layers; inputs (N, H, W) or (N, H, W, C)."""
  num_classes: int
  channels: Sequence[int] = (32, 64)
  hidden: Sequence[int] = (128,)
  pool: bool = True

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    if x.ndim == 3:
      x = x[..., None]
    for i, c in enumerate(self.channels):
      x = nn.relu(nn.Conv(c, (3, 3), name=f"Conv_{i}")(x))
      if self.pool and min(x.shape[1:3]) >= 2:
        x = nn.avg_pool(x, (2, 2), strides=(2, 2))
    x = x.reshape((x.shape[0], -1))
    for j, width in enumerate(self.hidden):
      x = nn.relu(nn.Dense(width, name=f"Dense_{j}")(x))
    return nn.Dense(self.num_classes, name=f"Dense_{len(self.hidden)}")(x)
