"""A Vision Transformer (Dosovitskiy et al., 2021) in Flax linen with timm's layout (pre-LN
blocks, a class token, learned position embeddings, exact GELU, LayerNorm eps 1e-6), so its
parameter counts are the published ones (vit_ti16: 5,717,416 at 224x224, 1000 classes).

Blocks are ``block_{i}`` so depth rules address them; the embedding output is captured as
``embed`` (where block influence reads the first block's input).
"""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from distill_jax.errors import InputError
from distill_jax.models.resnet import images

# Partition rules for the family: the embedding, blocks by index, the final norm and head.
PARTITION_RULES = (("regex", r"embed/.*", "embed"), ("depth", r"block_(\d+)"),
                   ("regex", r"(norm|head)/.*", "head"))

# Named presets (``{"name": "vit", "preset": "vit_s16"}``): DeiT/timm's Ti, S and B at patch 16.
VITS = {
    "vit_ti16": dict(patch_size=16, hidden_size=192, num_layers=12, num_heads=3, mlp_dim=768),
    "vit_s16": dict(patch_size=16, hidden_size=384, num_layers=12, num_heads=6, mlp_dim=1536),
    "vit_b16": dict(patch_size=16, hidden_size=768, num_layers=12, num_heads=12, mlp_dim=3072),
}


class Embed(nn.Module):
  """Patches (a conv with the patch as kernel and stride) as tokens, a learned class token in
  front, learned position embeddings added (one per token of the initialising image size)."""
  patch_size: int
  hidden_size: int

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    p, shape = self.patch_size, tuple(x.shape)
    if shape[1] % p or shape[2] % p:
      raise InputError(f"ViT: images of shape {shape} (N, H, W, C) do not split into {p}x{p} "
                       "patches")
    x = nn.Conv(self.hidden_size, (p, p), (p, p), padding="VALID", name="patch")(x)
    x = x.reshape(x.shape[0], -1, self.hidden_size)
    cls = self.param("cls", nn.initializers.zeros, (1, 1, self.hidden_size))
    x = jnp.concatenate([jnp.broadcast_to(cls, (x.shape[0], 1, self.hidden_size)), x], axis=1)
    if self.has_variable("params", "position"):   # a trained table fixes the image size
      tokens = self.get_variable("params", "position").shape[1]
      if tokens != x.shape[1]:
        raise InputError(f"ViT: embed/position has {tokens} tokens but images of shape {shape} "
                         f"give {x.shape[1]} (a class token and the {p}x{p} patches)")
    return x + self.param("position", nn.initializers.normal(0.02), (1,) + x.shape[1:])


class Attention(nn.Module):
  """Multi-head self-attention: ``query``, ``key``, ``value`` and ``out`` projections."""
  num_heads: int

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    b, length, width = x.shape
    if width % self.num_heads:
      raise InputError(f"ViT: hidden_size {width} is not divisible by num_heads {self.num_heads}")
    head = width // self.num_heads
    split = lambda t: t.reshape(b, length, self.num_heads, head).transpose(0, 2, 1, 3)
    q, k, v = (split(nn.Dense(width, name=n)(x)) for n in ("query", "key", "value"))
    probs = jax.nn.softmax(q @ k.transpose(0, 1, 3, 2) / math.sqrt(head), axis=-1)
    return nn.Dense(width, name="out")((probs @ v).transpose(0, 2, 1, 3).reshape(b, length, width))


class Mlp(nn.Module):
  """Dense ``dense_0`` to ``mlp_dim``, exact GELU, Dense ``dense_1`` back."""
  mlp_dim: int

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    h = jax.nn.gelu(nn.Dense(self.mlp_dim, name="dense_0")(x), approximate=False)
    return nn.Dense(x.shape[-1], name="dense_1")(h)


class Block(nn.Module):
  """Pre-LN: ``x + attention(norm_0(x))``, then ``x + mlp(norm_1(x))``; dropout on each
  branch's output when training."""
  num_heads: int
  mlp_dim: int
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    drop = lambda h: nn.Dropout(self.dropout, deterministic=not train)(h)
    x = x + drop(Attention(self.num_heads, name="attention")(
        nn.LayerNorm(1e-6, name="norm_0")(x)))
    return x + drop(Mlp(self.mlp_dim, name="mlp")(nn.LayerNorm(1e-6, name="norm_1")(x)))


class ViT(nn.Module):
  """A ViT classifier over (N, H, W[, C]) images: ``embed``, ``block_{i}``, the final
  LayerNorm ``norm``, the Dense ``head`` on the class token. Defaults: vit_ti16."""
  num_classes: int
  patch_size: int = 16
  hidden_size: int = 192
  num_layers: int = 12
  num_heads: int = 3
  mlp_dim: int = 768
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    x = Embed(self.patch_size, self.hidden_size, name="embed")(images(x, "ViT"))
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    for i in range(self.num_layers):
      x = Block(self.num_heads, self.mlp_dim, self.dropout, name=f"block_{i}")(x, train)
    return nn.Dense(self.num_classes, name="head")(nn.LayerNorm(1e-6, name="norm")(x)[:, 0])
