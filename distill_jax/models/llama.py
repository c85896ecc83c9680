"""A decoder-only transformer in Flax linen with the Llama architecture (RMSNorm, rotary
position embeddings, SwiGLU MLP, grouped-query attention, optionally tied embeddings) that
reproduces Hugging Face ``LlamaForCausalLM`` numerics. Blocks are ``layer_{i}`` so depth rules
address them. Reading a GGUF teacher: ``text/gguf.py``; the HF layout: ``text/hf_llama.py``;
sampling with the key/value cache: ``text/generate.py``.
"""
import dataclasses
import math
from typing import Any

import flax.linen as nn
import flax.traverse_util
import jax
import jax.numpy as jnp

from distill_jax.errors import InputError
from distill_jax.models.fields import ArchConfig


# Partition rules for the family: embeddings, blocks by index, the output head.
PARTITION_RULES = (("regex", r"embed/.*", "embed"), ("depth", r"layer_(\d+)"),
                   ("regex", r"(final_norm|lm_head)/.*", "head"))


# FSDP for the family (with a mesh that has an "fsdp" axis): matrices and embeddings split
# along their first axis; everything else replicated.
FSDP_RULES = ((r".*(kernel|embedding)", ("fsdp",)), (".*", ()))


@dataclasses.dataclass(frozen=True)
class LlamaConfig(ArchConfig):
  """Architecture of a Llama decoder; the defaults are SmolLM2-135M's. ``dtype`` is the
  compute dtype; parameters are stored in float32, norms and softmax run in float32."""
  vocab_size: int = 49152
  hidden_size: int = 576
  num_layers: int = 30
  num_heads: int = 9
  num_kv_heads: int = 3
  intermediate_size: int = 1536
  rope_theta: float = 100000.0
  rms_norm_eps: float = 1e-5
  tie_embeddings: bool = True
  max_position: int = 8192
  dtype: str = "float32"

  def __post_init__(self):
    if self.hidden_size % self.num_heads:
      raise InputError(f"LlamaConfig: hidden_size {self.hidden_size} is not divisible by "
                       f"num_heads {self.num_heads}")
    if self.num_heads % self.num_kv_heads:
      raise InputError(f"LlamaConfig: num_heads {self.num_heads} is not a multiple of "
                       f"num_kv_heads {self.num_kv_heads} (grouped-query attention)")
    jnp.dtype(self.dtype)  # raises on an unknown dtype name

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_heads


class RMSNorm(nn.Module):
  """HF LlamaRMSNorm: normalise in float32, scale, cast back."""
  eps: float

  @nn.compact
  def __call__(self, x):
    scale = self.param("scale", nn.initializers.ones, (x.shape[-1],))
    h = x.astype(jnp.float32)
    h = h * jax.lax.rsqrt(jnp.mean(h * h, axis=-1, keepdims=True) + self.eps)
    return (scale * h).astype(x.dtype)


def rotary(x: jnp.ndarray, positions: jnp.ndarray, theta: float) -> jnp.ndarray:
  """HF's rotary embedding ("rotate_half": the two halves of each head are the pairs).
  ``x``: (B, L, heads, head_dim); ``positions``: (B, L)."""
  half = x.shape[-1] // 2
  inv_freq = 1.0 / (theta ** (jnp.arange(0, half, dtype=jnp.float32) / half))
  angles = positions[..., None].astype(jnp.float32) * inv_freq           # (B, L, half)
  cos, sin = jnp.cos(angles)[:, :, None, :], jnp.sin(angles)[:, :, None, :]
  x1, x2 = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


def _dense(features: int, dtype: Any, name: str) -> nn.Dense:
  return nn.Dense(features, use_bias=False, dtype=dtype,
                  kernel_init=nn.initializers.normal(0.02), name=name)


class Attention(nn.Module):
  """Grouped-query self-attention over the new tokens and, with a cache, the cached ones."""
  config: LlamaConfig

  @nn.compact
  def __call__(self, x, positions, key_mask, cache=None, index=0):
    """``key_mask``: (B, S) 1 where a key slot holds a real token; ``cache``: ``(k, v)`` of
    shape (B, S, kv_heads, head_dim) that the new keys are written into at slot ``index``.
    Returns (output, new cache or None)."""
    c, dtype = self.config, jnp.dtype(self.config.dtype)
    b, length, _ = x.shape
    hd, groups = c.head_dim, c.num_heads // c.num_kv_heads
    q = _dense(c.num_heads * hd, dtype, "query")(x).reshape(b, length, c.num_heads, hd)
    k = _dense(c.num_kv_heads * hd, dtype, "key")(x).reshape(b, length, c.num_kv_heads, hd)
    v = _dense(c.num_kv_heads * hd, dtype, "value")(x).reshape(b, length, c.num_kv_heads, hd)
    q, k = rotary(q, positions, c.rope_theta), rotary(k, positions, c.rope_theta)
    if cache is not None:
      k = jax.lax.dynamic_update_slice(cache[0], k.astype(cache[0].dtype), (0, index, 0, 0))
      v = jax.lax.dynamic_update_slice(cache[1], v.astype(cache[1].dtype), (0, index, 0, 0))
      cache = (k, v)
    # A query in slot index+t sees the real tokens in slots <= index+t (causal, padding off).
    slots = jnp.arange(k.shape[1])
    allowed = (slots[None, :] <= index + jnp.arange(length)[:, None])[None] & (
        key_mask[:, None, :] > 0)                                            # (B, L, S)
    # Each key/value head serves `groups` query heads: fold them into its query rows, so the
    # scores are one batched matmul per kv head (XLA:CPU ran the 5-D einsum 1.7x slower).
    kv = lambda t: t.astype(dtype).transpose(0, 2, 1, 3)                   # (B, kv, S, hd)
    q = q.reshape(b, length, c.num_kv_heads, groups, hd).transpose(0, 2, 3, 1, 4)
    scores = (q.reshape(b, c.num_kv_heads, groups * length, hd) @ kv(k).swapaxes(-1, -2))
    scores = scores.reshape(b, c.num_kv_heads, groups, length, -1).astype(jnp.float32)
    scores = jnp.where(allowed[:, None, None], scores / math.sqrt(hd),
                       jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(dtype)
    out = probs.reshape(b, c.num_kv_heads, groups * length, -1) @ kv(v)
    out = out.reshape(b, c.num_kv_heads, groups, length, hd).transpose(0, 3, 1, 2, 4)
    return _dense(c.hidden_size, dtype, "output")(out.reshape(b, length, -1)), cache


class MLP(nn.Module):
  """SwiGLU: down(silu(gate(h)) * up(h))."""
  config: LlamaConfig

  @nn.compact
  def __call__(self, h):
    c, dtype = self.config, jnp.dtype(self.config.dtype)
    return _dense(c.hidden_size, dtype, "down")(
        nn.silu(_dense(c.intermediate_size, dtype, "gate")(h))
        * _dense(c.intermediate_size, dtype, "up")(h))


class Block(nn.Module):
  """Pre-norm block: x + attention(norm(x)), then x + mlp(norm(x))."""
  config: LlamaConfig

  @nn.compact
  def __call__(self, x, positions, key_mask, cache=None, index=0):
    c = self.config
    h, cache = Attention(c, name="attention")(RMSNorm(c.rms_norm_eps, name="attn_norm")(x),
                                              positions, key_mask, cache, index)
    x = x + h
    x = x + MLP(c, name="mlp")(RMSNorm(c.rms_norm_eps, name="mlp_norm")(x))
    return x if cache is None else (x, cache)


class Llama(nn.Module):
  """``embed``, blocks ``layer_{i}``, ``final_norm`` and (untied) ``lm_head``.

  ``model(tokens)`` -> float32 logits (B, L, vocab): causal, positions 0..L-1. For
  incremental decoding pass ``positions`` (B, L), ``key_mask`` (B, S) and ``cache`` (one
  ``(k, v)`` per block, each (B, S, kv_heads, head_dim), from :func:`empty_cache`) with the
  slot ``index`` the new tokens go to; it returns ``(logits, new cache)``."""
  config: LlamaConfig = LlamaConfig()

  @nn.compact
  def __call__(self, tokens, positions=None, key_mask=None, cache=None, index=0,
               train: bool = False):
    c, dtype = self.config, jnp.dtype(self.config.dtype)
    b, length = tokens.shape
    if positions is None:
      if length > c.max_position:
        raise InputError(f"sequence length {length} exceeds max_position {c.max_position}")
      positions = jnp.broadcast_to(jnp.arange(length) + index, (b, length))
    if key_mask is None:
      key_mask = jnp.ones((b, length if cache is None else cache[0][0].shape[1]), jnp.int32)
    embed = nn.Embed(c.vocab_size, c.hidden_size, embedding_init=nn.initializers.normal(0.02),
                     dtype=dtype, name="embed")
    x = embed(tokens)
    new_cache = []
    for i in range(c.num_layers):
      block = Block(c, name=f"layer_{i}")
      if cache is None:
        x = block(x, positions, key_mask)
      else:
        x, layer_cache = block(x, positions, key_mask, cache[i], index)
        new_cache.append(layer_cache)
    x = RMSNorm(c.rms_norm_eps, name="final_norm")(x)
    if c.tie_embeddings:
      logits = embed.attend(x)
    else:
      logits = nn.Dense(c.vocab_size, use_bias=False, dtype=dtype,
                        kernel_init=nn.initializers.normal(0.02), name="lm_head")(x)
    logits = logits.astype(jnp.float32)
    return logits if cache is None else (logits, new_cache)


def empty_cache(config: LlamaConfig, batch: int, slots: int) -> list:
  """A key/value cache for ``slots`` token positions (zeros; ``key_mask`` says which hold
  tokens)."""
  shape = (batch, slots, config.num_kv_heads, config.head_dim)
  return [(jnp.zeros(shape, config.dtype), jnp.zeros(shape, config.dtype))
          for _ in range(config.num_layers)]


def lm_outputs(logits: jnp.ndarray, batch) -> dict:
  """The LM's named outputs: ``logits``, the greedy ``next_token`` (what label-free agreement
  compares; unused outputs cost nothing under jit) and, when the batch has targets ``y``, each
  target's log-probability ``token_logprob`` (what perplexity needs, without moving the
  logits)."""
  out = {"logits": logits, "next_token": jnp.argmax(logits, -1).astype(jnp.int32)}
  if "y" in batch:
    out["token_logprob"] = jnp.take_along_axis(jax.nn.log_softmax(logits), batch["y"][..., None],
                                               axis=-1)[..., 0]
  return out


def expected_shapes(config: LlamaConfig) -> dict[str, tuple[int, ...]]:
  """Flax path -> shape of every parameter of ``config``'s model (nothing is allocated)."""
  tokens = jnp.zeros((1, 1), jnp.int32)
  abstract = jax.eval_shape(lambda: Llama(config).init(jax.random.PRNGKey(0), tokens))
  return {"/".join(k): tuple(v.shape)
          for k, v in flax.traverse_util.flatten_dict(abstract["params"]).items()}
