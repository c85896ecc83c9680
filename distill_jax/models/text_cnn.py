"""A convolutional sentence classifier (Kim, 2014) over token ids: the non-transformer student
of text classification.
"""
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp


class TokenEmbeddings(nn.Module):
  """``word_embeddings``: the BERT family's path and shape, so a teacher's table can start it."""
  vocab_size: int
  dim: int

  @nn.compact
  def __call__(self, ids):
    return nn.Embed(self.vocab_size, self.dim, name="word_embeddings")(ids)


class TextCNN(nn.Module):
  """Token embeddings (``embeddings/word_embeddings``), one 1-D convolution per width in
  ``widths`` (``conv_{w}``, ``filters`` channels, ReLU), each max-pooled over the real tokens,
  concatenated, dropout, the Dense ``classifier``. With the teacher's table (strategy
  ``copy``, ``student.frozen``) it is Tang et al.'s small student over frozen embeddings."""
  num_classes: int
  vocab_size: int = 30522
  embed_dim: int = 384
  widths: Sequence[int] = (3, 4, 5)
  filters: int = 100
  dropout: float = 0.5

  @nn.compact
  def __call__(self, input_ids, attention_mask, train: bool = False):
    x = TokenEmbeddings(self.vocab_size, self.embed_dim, name="embeddings")(input_ids)
    real = attention_mask[..., None] > 0
    pooled = []
    for w in self.widths:
      h = nn.relu(nn.Conv(self.filters, (w,), padding="SAME", name=f"conv_{w}")(x))
      pooled.append(jnp.max(jnp.where(real, h, 0.0), axis=1))   # ReLU: 0 is the floor anyway
    h = nn.Dropout(self.dropout, deterministic=not train)(jnp.concatenate(pooled, -1))
    return nn.Dense(self.num_classes, name="classifier")(h)
