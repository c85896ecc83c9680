"""A fully connected network whose depth and widths come from the config."""
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp


class MLP(nn.Module):
  """``len(hidden) + 1`` Dense layers named ``Dense_0 ... Dense_{n-1}``; the last is the head.

  The names carry the layer index so partition rules such as ``Dense_(\\d+)`` can address
  layers by depth. Inputs of any shape are flattened.
  """
  num_classes: int
  hidden: Sequence[int] = (256, 256)
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    x = x.reshape((x.shape[0], -1))
    for i, width in enumerate(self.hidden):
      x = nn.relu(nn.Dense(width, name=f"Dense_{i}")(x))
      if self.dropout:
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Dense(self.num_classes, name=f"Dense_{len(self.hidden)}")(x)

