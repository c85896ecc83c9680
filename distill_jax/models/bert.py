"""A BERT encoder in Flax linen that reproduces HuggingFace ``BertModel`` numerics (post-
LayerNorm, exact GELU, HF's padding mask); blocks are ``encoder/layer_{i}`` so depth rules
address them. HF weights: ``text/weights.py``.
"""
import dataclasses
import math
from typing import Any, Mapping, Optional

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from distill_jax.errors import InputError
from distill_jax.models.fields import ArchConfig


@dataclasses.dataclass(frozen=True)
class BertConfig(ArchConfig):
  """Architecture of a BERT encoder; the defaults are all-MiniLM-L6-v2's.

  JSON-friendly (``dtype`` is a string) so a student's config can be saved next to its
  weights. ``dtype`` is the compute dtype; parameters are always stored in float32.
  """
  vocab_size: int = 30522
  hidden_size: int = 384
  num_layers: int = 6
  num_heads: int = 12
  # 0: hidden_size // num_heads (BERT's). Set, the attention is num_heads x head_dim wide, so
  # heads can be pruned at full hidden width (not a transformers layout: docs/minilm.md).
  head_dim: int = 0
  intermediate_size: int = 1536
  max_position: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12
  hidden_dropout: float = 0.1
  attention_dropout: float = 0.1
  with_pooler: bool = True
  # > 0: the token table is factorised (ALBERT): a (vocab, rank) table and a (rank, hidden)
  # projection, ``embeddings/word_projection`` (recombine.factorize initialises both by SVD).
  embedding_rank: int = 0
  dtype: str = "float32"

  def __post_init__(self):
    if not self.head_dim and self.hidden_size % self.num_heads:
      raise InputError(f"BertConfig: hidden_size {self.hidden_size} is not divisible by "
                       f"num_heads {self.num_heads}")
    if not 0 <= self.embedding_rank <= self.hidden_size:
      raise InputError(f"BertConfig: embedding_rank {self.embedding_rank} must be 0 (a full "
                       f"table) or at most hidden_size {self.hidden_size}")
    jnp.dtype(self.dtype)  # raises on an unknown dtype name


# BertConfig field -> HF config.json key (HF defaults where HF has them).
_HF_KEYS = {"vocab_size": "vocab_size", "hidden_size": "hidden_size",
            "num_layers": "num_hidden_layers", "num_heads": "num_attention_heads",
            "intermediate_size": "intermediate_size", "max_position": "max_position_embeddings",
            "type_vocab_size": "type_vocab_size", "layer_norm_eps": "layer_norm_eps",
            "hidden_dropout": "hidden_dropout_prob",
            "attention_dropout": "attention_probs_dropout_prob",
            # not transformers keys (docs/minilm.md); written only when set
            "embedding_rank": "embedding_rank", "head_dim": "head_dim"}
_HF_FIXED = {"hidden_act": "gelu", "position_embedding_type": "absolute"}   # what this port is


def bert_config_from_hf(hf: Mapping[str, Any], **overrides) -> BertConfig:
  """A :class:`BertConfig` from a HuggingFace ``config.json`` dict (absolute positions and the
  exact GELU only: what this port implements)."""
  for key, value in _HF_FIXED.items():
    if hf.get(key, value) != value:
      raise InputError(f"config.json {key}={hf[key]!r}: only {value!r} is implemented")
  defaults = BertConfig()
  return BertConfig(**{f: type(getattr(defaults, f))(hf.get(k, getattr(defaults, f)))
                       for f, k in _HF_KEYS.items()}).replace(**overrides)


def bert_config_to_hf(cfg: BertConfig) -> dict[str, Any]:
  """The HuggingFace ``config.json`` dict of ``cfg`` (for exporting a student)."""
  keys = {f: k for f, k in _HF_KEYS.items()
          if f not in ("embedding_rank", "head_dim") or getattr(cfg, f)}
  return {"architectures": ["BertModel"], "model_type": "bert", **_HF_FIXED,
          **{k: getattr(cfg, f) for f, k in keys.items()}, "pad_token_id": 0}


@flax.struct.dataclass
class BertOutput:
  """What :class:`BertEncoder` returns; ``pooled`` is None without a pooler. Each layer's
  output and attention probabilities are captured as ``encoder/layer_{i}`` and
  ``encoder/layer_{i}/attention/1`` (``Model.apply(..., capture=True)``)."""
  last_hidden_state: jnp.ndarray
  pooled: Optional[jnp.ndarray] = None


def gelu(x: jnp.ndarray) -> jnp.ndarray:
  """HF's "gelu": the exact erf form, not the tanh approximation (jax's default)."""
  return jax.nn.gelu(x, approximate=False)


def additive_mask(attention_mask: jnp.ndarray, dtype: Any) -> jnp.ndarray:
  """(B, L) 1/0 mask -> (B, 1, 1, L) bias: 0 where attended, the dtype's min where padded
  (HF's convention; a fully padded row then softmaxes to uniform instead of NaN)."""
  mask = attention_mask[:, None, None, :].astype(dtype)
  return (1.0 - mask) * jnp.finfo(dtype).min


def _dense(features: int, dtype: Any, name: str) -> nn.Dense:
  """Dense with BERT's N(0, 0.02) initialisation."""
  return nn.Dense(features, dtype=dtype, kernel_init=nn.initializers.normal(0.02), name=name)


class BertAttention(nn.Module):
  """HF BertAttention: self-attention, output projection, residual, LayerNorm."""
  config: BertConfig

  @nn.compact
  def __call__(self, x, bias, deterministic: bool = True):
    """Returns (output, attention probabilities (B, heads, L, L))."""
    c, dtype = self.config, jnp.dtype(self.config.dtype)
    b, length, _ = x.shape
    head = c.head_dim or c.hidden_size // c.num_heads
    width = c.num_heads * head
    # (B, heads, L, head) with batch dims leading: XLA:CPU ran the equivalent einsum on the
    # (B, L, heads, head) layout at half the speed.
    split = lambda t: t.reshape(b, length, c.num_heads, head).transpose(0, 2, 1, 3)
    q = split(_dense(width, dtype, "query")(x))
    k = split(_dense(width, dtype, "key")(x))
    v = split(_dense(width, dtype, "value")(x))
    # Scores and softmax in float32 even for a bf16 model: the mask bias needs the range.
    scores = (q @ k.transpose(0, 1, 3, 2)).astype(jnp.float32) / math.sqrt(head)
    probs = jax.nn.softmax(scores + bias, axis=-1)
    dropped = nn.Dropout(c.attention_dropout, deterministic=deterministic)(probs)
    context = (dropped.astype(dtype) @ v).transpose(0, 2, 1, 3)
    out = _dense(c.hidden_size, dtype, "output")(context.reshape(b, length, -1))
    out = nn.Dropout(c.hidden_dropout, deterministic=deterministic)(out)
    out = nn.LayerNorm(c.layer_norm_eps, dtype=dtype, name="layer_norm")(out + x)
    return out, probs


class BertLayer(nn.Module):
  """One post-LayerNorm transformer block (HF BertLayer)."""
  config: BertConfig

  @nn.compact
  def __call__(self, x, bias, deterministic: bool = True):
    """The block's output (an array, so ``capture_intermediates`` records the hidden state)."""
    c, dtype = self.config, jnp.dtype(self.config.dtype)
    x, _ = BertAttention(c, name="attention")(x, bias, deterministic)
    h = gelu(_dense(c.intermediate_size, dtype, "intermediate")(x))
    h = _dense(c.hidden_size, dtype, "output")(h)
    h = nn.Dropout(c.hidden_dropout, deterministic=deterministic)(h)
    return nn.LayerNorm(c.layer_norm_eps, dtype=dtype, name="output_layer_norm")(h + x)


class BertEmbeddings(nn.Module):
  """Word + position + token-type embeddings, LayerNorm, dropout."""
  config: BertConfig

  @nn.compact
  def __call__(self, input_ids, token_type_ids, deterministic: bool = True):
    c, dtype = self.config, jnp.dtype(self.config.dtype)
    length = input_ids.shape[1]
    if length > c.max_position:
      raise InputError(f"sequence length {length} exceeds max_position {c.max_position}")
    init = nn.initializers.normal(0.02)
    embed = lambda n, name, width=c.hidden_size: nn.Embed(n, width, embedding_init=init,
                                                          dtype=dtype, name=name)
    if c.embedding_rank:
      words = embed(c.vocab_size, "word_embeddings", c.embedding_rank)(input_ids)
      words = nn.Dense(c.hidden_size, use_bias=False, dtype=dtype, kernel_init=init,
                       name="word_projection")(words)
    else:
      words = embed(c.vocab_size, "word_embeddings")(input_ids)
    x = (words
         + embed(c.max_position, "position_embeddings")(jnp.arange(length)[None, :])
         + embed(c.type_vocab_size, "token_type_embeddings")(token_type_ids))
    x = nn.LayerNorm(c.layer_norm_eps, dtype=dtype, name="layer_norm")(x)
    return nn.Dropout(c.hidden_dropout, deterministic=deterministic)(x)


class BertStack(nn.Module):
  """The ``encoder``: ``num_layers`` blocks named ``layer_{i}`` (index in the name, for rules)."""
  config: BertConfig

  @nn.compact
  def __call__(self, x, bias, deterministic: bool = True):
    for i in range(self.config.num_layers):
      x = BertLayer(self.config, name=f"layer_{i}")(x, bias, deterministic)
    return x


class BertEncoder(nn.Module):
  """BERT: ``embeddings``, ``encoder/layer_{i}``, and a ``pooler`` when ``config.with_pooler``.

  Built from a :class:`BertConfig`. The pooler (tanh Dense on the
  first token, as HF) is kept so that HF checkpoints round-trip exactly; sentence embeddings
  do not use it, and a student can drop it with ``with_pooler=False``.
  """
  config: BertConfig = BertConfig()

  def setup(self):
    self.embeddings = BertEmbeddings(self.config)
    self.encoder = BertStack(self.config)
    if self.config.with_pooler:
      self.pooler = nn.Dense(self.config.hidden_size, dtype=jnp.dtype(self.config.dtype),
                             kernel_init=nn.initializers.normal(0.02))

  def __call__(self, input_ids: jnp.ndarray, attention_mask: Optional[jnp.ndarray] = None,
               token_type_ids: Optional[jnp.ndarray] = None, train: bool = False) -> BertOutput:
    """``input_ids``, ``attention_mask`` (1 = token, 0 = padding) and ``token_type_ids`` are
    (B, L) integers. Dropout runs when ``train`` (needs a "dropout" rng)."""
    if attention_mask is None:
      attention_mask = jnp.ones_like(input_ids)
    if token_type_ids is None:
      token_type_ids = jnp.zeros_like(input_ids)
    x = self.embeddings(input_ids, token_type_ids, not train)
    bias = additive_mask(attention_mask, jnp.float32)
    last = self.encoder(x, bias, not train)
    pooled = jnp.tanh(self.pooler(last[:, 0])) if self.config.with_pooler else None
    return BertOutput(last_hidden_state=last, pooled=pooled)


def init_params(cfg: BertConfig, rng: jax.Array, length: int = 8) -> dict:
  """Freshly initialised parameters of ``cfg``'s encoder (a dummy (1, length) input)."""
  ids = jnp.zeros((1, length), jnp.int32)
  return BertEncoder(cfg).init(rng, ids, jnp.ones_like(ids))["params"]


def mean_pool(hidden: jnp.ndarray, attention_mask: jnp.ndarray) -> jnp.ndarray:
  """sentence-transformers' mean pooling: the average of the non-padding token vectors."""
  mask = attention_mask[..., None].astype(hidden.dtype)
  return (hidden * mask).sum(axis=1) / jnp.maximum(mask.sum(axis=1), 1e-9)


def normalize(x: jnp.ndarray, eps: float = 1e-12) -> jnp.ndarray:
  """L2 normalisation as ``torch.nn.functional.normalize`` (divide by max(norm, eps))."""
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def sentence_outputs(out: BertOutput, batch: Mapping[str, Any]) -> dict:
  """The encoder's named outputs: ``pooled`` (mean of the real tokens, float32, not yet
  normalised; all-MiniLM-L6-v2's sentence vector is its L2 normalisation), ``token_mask``."""
  mask = batch["attention_mask"]
  return {"pooled": mean_pool(out.last_hidden_state.astype(jnp.float32), mask),
          "token_mask": mask}


class BertClassifier(BertEncoder):
  """The encoder with a classification head on the mean of its real tokens' states (the sentence
  vector all-MiniLM-L6-v2 was trained for): dropout, then the Dense ``classifier``. Returns
  ``(logits, BertOutput)``; parameter paths are the encoder's plus ``classifier/``, so an
  encoder's weights (``teacher.init``) and depth rules apply unchanged."""
  num_classes: int = 2
  classifier_dropout: float = 0.1

  def setup(self):
    super().setup()
    self.classifier = nn.Dense(self.num_classes, kernel_init=nn.initializers.normal(0.02))
    self.head_dropout = nn.Dropout(self.classifier_dropout)

  def __call__(self, input_ids, attention_mask=None, token_type_ids=None, train: bool = False):
    if attention_mask is None:
      attention_mask = jnp.ones_like(input_ids)
    out = super().__call__(input_ids, attention_mask, token_type_ids, train)
    pooled = mean_pool(out.last_hidden_state.astype(jnp.float32), attention_mask)
    return self.classifier(self.head_dropout(pooled, deterministic=not train)), out


def classifier_outputs(out: tuple, batch: Mapping[str, Any]) -> dict:
  """``logits`` and the encoder's :func:`sentence_outputs`."""
  logits, encoded = out
  return {"logits": logits.astype(jnp.float32), **sentence_outputs(encoded, batch)}
