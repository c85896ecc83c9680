"""Graph neural networks on whole graphs (full batch): GCN, GraphSAGE (mean) and the MLP on node
features that GLNN distils them into, one module with a ``conv`` field.

Message passing is ``jax.ops.segment_sum`` over an edge list (``senders[e] -> receivers[e]``):
the whole of what GCN and mean-SAGE need, jit- and grad-friendly, with nothing beyond JAX (a
graph library such as jraph would be a dependency outside this project's fixed stack for what
is a few lines here; docs/graphs.md).
Layers are ``layer_0 ... layer_{n-1}`` (the last is the head), so depth rules
(``layer_(\\d+)``) and width selection address them as they address any other family.
"""
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

CONVS = ("gcn", "sage", "none")
GLOROT = nn.initializers.xavier_uniform()     # as Kipf & Welling's GCN and DGL's layers


def aggregate(h: jnp.ndarray, senders: jnp.ndarray, receivers: jnp.ndarray,
              weights: jnp.ndarray, num_nodes: int) -> jnp.ndarray:
  """``out[v] = sum_{e: receivers[e] = v} weights[e] * h[senders[e]]``."""
  return jax.ops.segment_sum(h[senders] * weights[:, None], receivers, num_segments=num_nodes)


def degrees(receivers: jnp.ndarray, num_nodes: int) -> jnp.ndarray:
  return jax.ops.segment_sum(jnp.ones(receivers.shape, jnp.float32), receivers,
                             num_segments=num_nodes)


def gcn_propagate(h: jnp.ndarray, senders: jnp.ndarray, receivers: jnp.ndarray,
                  num_nodes: int) -> jnp.ndarray:
  """Kipf & Welling's ``D^-1/2 (A + I) D^-1/2 h``, D the degrees counting the self-loop."""
  inv_sqrt = jax.lax.rsqrt(degrees(receivers, num_nodes) + 1.0)
  neighbours = aggregate(h, senders, receivers, inv_sqrt[senders] * inv_sqrt[receivers],
                         num_nodes)
  return neighbours + h * (inv_sqrt ** 2)[:, None]


def mean_neighbours(h: jnp.ndarray, senders: jnp.ndarray, receivers: jnp.ndarray,
                    num_nodes: int) -> jnp.ndarray:
  """The mean of each node's neighbours' ``h`` (zero for a node without neighbours)."""
  total = aggregate(h, senders, receivers, jnp.ones(senders.shape, h.dtype), num_nodes)
  return total / jnp.maximum(degrees(receivers, num_nodes), 1.0)[:, None]


class GraphLayer(nn.Module):
  """One layer. ``gcn``: ``A_hat h W + b``; ``sage``: ``h W_self + b + mean_N(h) W_neigh``
  (DGL's SAGEConv "mean"); ``none``: ``h W + b`` (no graph)."""
  features: int
  conv: str

  @nn.compact
  def __call__(self, h, senders, receivers):
    n = h.shape[0]
    if self.conv == "sage":
      own = nn.Dense(self.features, kernel_init=GLOROT, name="self")(h)
      # Transform, then average: the same as averaging first, on the narrower side.
      neighbour = nn.Dense(self.features, use_bias=False, kernel_init=GLOROT, name="neighbour")
      if h.shape[-1] > self.features:
        return own + mean_neighbours(neighbour(h), senders, receivers, n)
      return own + neighbour(mean_neighbours(h, senders, receivers, n))
    kernel = self.param("kernel", GLOROT, (h.shape[-1], self.features))
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    if self.conv == "none":
      return h @ kernel + bias
    if h.shape[-1] > self.features:
      return gcn_propagate(h @ kernel, senders, receivers, n) + bias
    return gcn_propagate(h, senders, receivers, n) @ kernel + bias


class GNN(nn.Module):
  """``len(hidden) + 1`` graph layers with ReLU and dropout between them.

  Inputs: ``x`` (B, N, F) node features of B graphs of N nodes (one graph in full-batch
  training) and their edges ``senders``/``receivers`` (B, E), node ids within each graph; the B
  graphs are run as one disjoint union. Output: (B, N, num_classes) logits."""
  num_classes: int
  conv: str = "sage"                 # gcn | sage | none (an MLP on each node's own features)
  hidden: Sequence[int] = (128,)
  dropout: float = 0.0
  input_dropout: float = 0.0         # on the node features (GCN's recipe drops them too)

  @nn.compact
  def __call__(self, x, senders, receivers, train: bool = False):
    if self.conv not in CONVS:
      raise ValueError(f"GNN conv {self.conv!r}: use one of {CONVS}")
    x, senders, receivers = (jnp.asarray(a) for a in (x, senders, receivers))
    b, n = x.shape[:2]
    offsets = (jnp.arange(b, dtype=senders.dtype) * n)[:, None]
    s, r = (senders + offsets).reshape(-1), (receivers + offsets).reshape(-1)
    h = x.reshape(b * n, -1)
    if self.input_dropout:
      h = nn.Dropout(self.input_dropout, deterministic=not train)(h)
    widths = list(self.hidden) + [self.num_classes]
    for i, width in enumerate(widths):
      h = GraphLayer(width, self.conv, name=f"layer_{i}")(h, s, r)
      if i < len(widths) - 1:
        h = nn.relu(h)
        if self.dropout:
          h = nn.Dropout(self.dropout, deterministic=not train)(h)
    return h.reshape(b, n, -1)
