"""Distillation losses as small pure functions; each states its math.

All take logits of shape (B, C) and return a scalar averaged over the batch, optionally
weighted by ``mask`` (B,) so that padded examples count for nothing.
"""
from typing import Optional

import jax
import jax.numpy as jnp
import optax


def _mean(per_example: jnp.ndarray, mask: Optional[jnp.ndarray]) -> jnp.ndarray:
  if mask is None:
    return per_example.mean()
  return (per_example * mask).sum() / jnp.maximum(mask.sum(), 1.0)


def cross_entropy(logits: jnp.ndarray, labels: jnp.ndarray,
                  mask: Optional[jnp.ndarray] = None) -> jnp.ndarray:
  """CE(y, s) = -log softmax(s)[y]."""
  return _mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels), mask)


def kl_divergence(teacher_logits: jnp.ndarray, student_logits: jnp.ndarray,
                  temperature: float = 1.0, mask: Optional[jnp.ndarray] = None) -> jnp.ndarray:
  """KL(softmax(t/T) || softmax(s/T)) = sum_c p_c (log p_c - log q_c)."""
  log_p = jax.nn.log_softmax(teacher_logits / temperature, axis=-1)
  log_q = jax.nn.log_softmax(student_logits / temperature, axis=-1)
  return _mean((jnp.exp(log_p) * (log_p - log_q)).sum(-1), mask)


def hinton_kd(student_logits: jnp.ndarray, teacher_logits: jnp.ndarray, labels: jnp.ndarray,
              temperature: float, alpha: float, mask: Optional[jnp.ndarray] = None,
              hard: Optional[jnp.ndarray] = None) -> jnp.ndarray:
  """Hinton et al. (2015): alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1-alpha) * CE(y, s).

  The T^2 factor keeps the soft-target gradients on the same scale as the hard-label ones
  when T changes. ``hard`` replaces the CE term when the caller has its own label loss
  (e.g. mixup's interpolated labels).
  """
  soft = kl_divergence(teacher_logits, student_logits, temperature, mask)
  if hard is None:
    hard = cross_entropy(student_logits, labels, mask)
  return alpha * temperature ** 2 * soft + (1.0 - alpha) * hard
