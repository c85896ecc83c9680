"""Sentence-embedding distillation: the pure train step and its losses (MiniLM style).

The student (a shallower BERT) learns to reproduce the teacher's sentence embeddings on
unlabelled sentences. Terms, each with a weight in ``config.distill`` (0 turns it off):

- ``embedding_mse``: mean over the batch of ||m_s - m_t||^2, m the mean-pooled (not yet
  normalised) token vectors: matches direction and length.
- ``embedding_cosine``: mean of 1 - cos(m_s, m_t): the direction alone, which is all that the
  normalised embedding (and STS) sees.
- ``hidden``: masked MSE between student layer j's output and teacher layer ``layer_map[j]``'s
  (TinyBERT-style hidden-state transfer; same width, no projection).
- ``relation``: MiniLMv2's self-attention relation transfer on one layer pair: for queries,
  keys and values A, split into ``relation_heads`` heads, R = softmax(A A^T / sqrt(d)) over the
  non-padding tokens, and KL(R_teacher || R_student) averaged over heads and real tokens.

Features come from ``features.capture`` (Flax ``capture_intermediates``): ``encoder/layer_i``
is a layer's output, ``encoder/layer_i/attention/{query,key,value}`` its projections. The
embedding-only losses can train from cached teacher embeddings (``batch["teacher_embedding"]``);
the others need the teacher's forward pass.
"""
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import optax

from distill_jax import features
from distill_jax.models.bert import mean_pool

RELATION_PARTS = ("query", "key", "value")


def _masked_mean(per_token: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
  """Mean of (B, L) values over the real (mask = 1) tokens."""
  m = mask.astype(jnp.float32)
  return (per_token * m).sum() / jnp.maximum(m.sum(), 1.0)


def embedding_mse(student: jnp.ndarray, teacher: jnp.ndarray) -> jnp.ndarray:
  return jnp.mean(jnp.sum(jnp.square(student - teacher), -1))


def embedding_cosine(student: jnp.ndarray, teacher: jnp.ndarray) -> jnp.ndarray:
  cos = optax.cosine_similarity(student, teacher, epsilon=1e-9)
  return jnp.mean(1.0 - cos)


def hidden_mse(student: jnp.ndarray, teacher: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
  """Masked mean over tokens of the mean squared difference of (B, L, H) hidden states."""
  return _masked_mean(jnp.mean(jnp.square(student - teacher), -1), mask)


def relation_log_probs(a: jnp.ndarray, mask: jnp.ndarray, heads: int) -> jnp.ndarray:
  """log softmax(A_h A_h^T / sqrt(d)) over real keys: (B, heads, L, L) from (B, L, H)."""
  b, length, width = a.shape
  d = width // heads
  ah = a.astype(jnp.float32).reshape(b, length, heads, d).transpose(0, 2, 1, 3)
  scores = ah @ ah.transpose(0, 1, 3, 2) / jnp.sqrt(float(d))
  scores = jnp.where(mask[:, None, None, :] > 0, scores, -1e9)
  return jax.nn.log_softmax(scores, axis=-1)


def relation_kl(student: jnp.ndarray, teacher: jnp.ndarray, mask: jnp.ndarray,
                heads: int) -> jnp.ndarray:
  """KL(R_t || R_s) per query token, averaged over heads and the real query tokens."""
  log_t, log_s = relation_log_probs(teacher, mask, heads), relation_log_probs(student, mask, heads)
  kl = jnp.sum(jnp.exp(log_t) * (log_t - log_s), -1).mean(1)       # (B, L)
  return _masked_mean(kl, mask)


def make_text_train_step(student_apply: Callable, teacher_apply: Optional[Callable], *,
                         embedding_mse_weight: float = 1.0, embedding_cosine_weight: float = 0.0,
                         hidden_weight: float = 0.0, layer_map: Sequence[int] = (),
                         relation_weight: float = 0.0, relation_layers: Sequence[int] = (-1, -1),
                         relation_heads: int = 12, num_student_layers: int = 0,
                         num_teacher_layers: int = 0, dropout: bool = False) -> Callable:
  """The pure ``train_step(state, batch, teacher_params) -> (state, metrics)``.

  ``batch``: ``input_ids``, ``attention_mask``, ``token_type_ids`` (B, L) and optionally the
  cached ``teacher_embedding`` (B, H) (mean-pooled, unnormalised). ``layer_map[j]``: the
  teacher layer whose output student layer j matches; ``relation_layers``: (teacher, student)
  layer indices (negative from the top) of the relation transfer.
  """
  needs_teacher_features = bool(hidden_weight or relation_weight)
  t_rel, s_rel = (i % n for i, n in zip(relation_layers, (num_teacher_layers or 1,
                                                          num_student_layers or 1)))

  def forward(apply, params, batch, **kwargs):
    out, feats = features.capture(apply, params, batch["input_ids"],
                                  attention_mask=batch["attention_mask"],
                                  token_type_ids=batch["token_type_ids"], **kwargs)
    return mean_pool(out.last_hidden_state.astype(jnp.float32), batch["attention_mask"]), feats

  def loss_fn(params, batch, teacher_params, rng):
    mask = batch["attention_mask"]
    kwargs = dict(deterministic=False, rngs={"dropout": rng}) if dropout else {}
    s_emb, s_feats = forward(student_apply, params, batch, **kwargs)
    if needs_teacher_features or "teacher_embedding" not in batch:
      t_emb, t_feats = forward(teacher_apply, teacher_params, batch)
    else:
      t_emb, t_feats = batch["teacher_embedding"].astype(jnp.float32), {}
    t_emb = jax.lax.stop_gradient(t_emb)
    t_feats = jax.lax.stop_gradient(t_feats)
    terms = {"embedding_mse": embedding_mse(s_emb, t_emb),
             "embedding_cosine": embedding_cosine(s_emb, t_emb)}
    loss = embedding_mse_weight * terms["embedding_mse"] + \
        embedding_cosine_weight * terms["embedding_cosine"]
    if hidden_weight:
      terms["hidden"] = sum(hidden_mse(s_feats[f"encoder/layer_{j}"],
                                       t_feats[f"encoder/layer_{i}"], mask)
                            for j, i in enumerate(layer_map)) / max(len(layer_map), 1)
      loss = loss + hidden_weight * terms["hidden"]
    if relation_weight:
      terms["relation"] = sum(
          relation_kl(s_feats[f"encoder/layer_{s_rel}/attention/{part}"],
                      t_feats[f"encoder/layer_{t_rel}/attention/{part}"], mask, relation_heads)
          for part in RELATION_PARTS) / len(RELATION_PARTS)
      loss = loss + relation_weight * terms["relation"]
    return loss, terms

  def train_step(state, batch: dict, teacher_params: Any = None):
    rng = jax.random.fold_in(state.rng, state.step)
    (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, batch, teacher_params, rng)
    metrics = {"loss": loss, "grad_norm": optax.global_norm(grads), **terms}
    return state.apply_gradients(grads=grads), metrics

  return train_step
