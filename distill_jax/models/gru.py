"""A recurrent classifier for sequences: a (bidirectional) GRU, then Dense layers and a head."""
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp


class GRU(nn.Module):
  """``GRU_0`` reads (N, T[, C]) and returns every step's state; flattened, they feed
  ``Dense_0 ... Dense_{n-1}`` (the last is the head).

  As in MNIST-1D's reference GRU (hidden 6, bidirectional, all time steps to a linear head),
  the head sees the whole sequence of states, not only the last one.
  """
  num_classes: int
  units: int = 6
  bidirectional: bool = True
  hidden: Sequence[int] = ()

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    if x.ndim == 2:
      x = x[..., None]
    # parent=None: the cells belong to their RNN, so parameters read GRU_0/forward_rnn/cell/...
    cell = lambda: nn.GRUCell(self.units, parent=None)
    if self.bidirectional:
      rnn = nn.Bidirectional(nn.RNN(cell(), parent=None), nn.RNN(cell(), parent=None),
                             name="GRU_0")
    else:
      rnn = nn.RNN(cell(), name="GRU_0")
    x = rnn(x).reshape((x.shape[0], -1))
    for j, width in enumerate(self.hidden):
      x = nn.relu(nn.Dense(width, name=f"Dense_{j}")(x))
    return nn.Dense(self.num_classes, name=f"Dense_{len(self.hidden)}")(x)
