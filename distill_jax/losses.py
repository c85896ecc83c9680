"""Distillation losses as small pure functions; each states its math.

Logit losses take logits of shape (B, C) and return a scalar averaged over the batch,
optionally weighted by ``mask`` (B,) so that padded examples count for nothing. The losses a
config can name live in two registries: ``LOGIT_LOSSES`` (kd, dkd) and ``FEATURE_LOSSES``
(hint, attention, cosine, rkd, similarity); register your own with their decorators.
"""
from typing import Optional

import jax
import jax.numpy as jnp
import optax

from distill_jax.registry import Registry


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


# --- Logit losses chosen by name (``config.distill.logit_loss``) --------------------------------

LOGIT_LOSSES: Registry = Registry("logit loss")


def decoupled_kd(student_logits: jnp.ndarray, teacher_logits: jnp.ndarray, labels: jnp.ndarray,
                 temperature: float, alpha: float = 1.0, beta: float = 8.0,
                 mask: Optional[jnp.ndarray] = None) -> jnp.ndarray:
  """Decoupled KD (Zhao et al., 2022): alpha * TCKD + beta * NCKD, both scaled by T^2.

  TCKD = KL(b_t || b_s) over the binary split (target class, all others) of softmax(./T);
  NCKD = KL(p~_t || p~_s) over the softmax of the non-target logits alone. Classic KD couples
  NCKD to the teacher's target confidence (weight 1 - p_t); DKD weights it freely by beta.
  """
  num_classes = student_logits.shape[-1]
  target = jax.nn.one_hot(labels, num_classes, dtype=bool)

  def binary_log_probs(logits):
    log_p = jax.nn.log_softmax(logits / temperature, axis=-1)
    log_target = jnp.sum(jnp.where(target, log_p, 0.0), -1)
    log_rest = jax.nn.logsumexp(jnp.where(target, -jnp.inf, log_p), axis=-1)   # log(1 - p_t)
    return jnp.stack([log_target, log_rest], -1)

  def non_target_log_probs(logits):   # the target logit removed (-inf) before the softmax
    return jax.nn.log_softmax(jnp.where(target, -1e9, logits / temperature), axis=-1)

  def kl(log_p, log_q):
    return (jnp.exp(log_p) * (log_p - log_q)).sum(-1)

  tckd = kl(binary_log_probs(teacher_logits), binary_log_probs(student_logits))
  nckd = kl(jnp.where(target, 0.0, non_target_log_probs(teacher_logits)),
            jnp.where(target, 0.0, non_target_log_probs(student_logits)))
  return temperature ** 2 * _mean(alpha * tckd + beta * nckd, mask)


@LOGIT_LOSSES.register("kd")
def _kd_loss(student_logits, teacher_logits, labels, temperature, hard, alpha=0.9):
  return hinton_kd(student_logits, teacher_logits, labels, temperature, alpha, hard=hard)


@LOGIT_LOSSES.register("dkd")
def _dkd_loss(student_logits, teacher_logits, labels, temperature, hard, alpha=1.0, beta=8.0):
  """The paper's objective: label cross-entropy plus DKD."""
  return hard + decoupled_kd(student_logits, teacher_logits, labels, temperature, alpha, beta)


# --- Feature losses chosen by name (``config.distill.features.losses``) ------------------------
# Each takes the teacher's and the student's feature (B, ...) and returns a scalar. Losses with
# ``project = True`` compare the features elementwise, so the student's feature is first mapped
# to the teacher's shape by a learned projection (see ``features.py``); relation losses compare
# (B, B) matrices and work across any widths as they are.

FEATURE_LOSSES: Registry = Registry("feature loss")


def _feature_loss(name: str, project: bool):
  def register(fn):
    fn.project = project
    return FEATURE_LOSSES.register(name)(fn)
  return register


def _flat(f: jnp.ndarray) -> jnp.ndarray:
  return f.reshape((f.shape[0], -1)).astype(jnp.float32)


def _unit(v: jnp.ndarray, eps: float = 1e-8) -> jnp.ndarray:
  return v / jnp.maximum(jnp.linalg.norm(v, axis=-1, keepdims=True), eps)


@_feature_loss("hint", project=True)
def hint_loss(teacher: jnp.ndarray, student: jnp.ndarray) -> jnp.ndarray:
  """FitNets (Romero et al., 2015): mean squared error between (projected) features."""
  return jnp.mean(jnp.square(_flat(student) - _flat(teacher)))


def attention_map(f: jnp.ndarray) -> jnp.ndarray:
  """Zagoruyko & Komodakis (2017): mean over channels (last axis) of f^2, flattened over the
  positions and L2-normalised. A (B, D) feature counts as D positions of one channel."""
  f = f.astype(jnp.float32)
  a = jnp.square(f) if f.ndim == 2 else jnp.mean(jnp.square(f), axis=-1)
  return _unit(_flat(a))


@_feature_loss("attention", project=True)
def attention_transfer(teacher: jnp.ndarray, student: jnp.ndarray) -> jnp.ndarray:
  """Attention transfer: mean over the batch of ||Q_s - Q_t||^2 of the normalised maps."""
  return jnp.mean(jnp.sum(jnp.square(attention_map(student) - attention_map(teacher)), -1))


@_feature_loss("cosine", project=True)
def cosine_loss(teacher: jnp.ndarray, student: jnp.ndarray) -> jnp.ndarray:
  """Mean over the batch of 1 - cos(student_b, teacher_b) of the flattened features."""
  return jnp.mean(1.0 - jnp.sum(_unit(_flat(student)) * _unit(_flat(teacher)), -1))


def pairwise_distances(f: jnp.ndarray) -> jnp.ndarray:
  """Euclidean distances between the batch's flattened features, (B, B)."""
  v = _flat(f)
  sq = jnp.sum(jnp.square(v[:, None, :] - v[None, :, :]), -1)
  return jnp.sqrt(sq + 1e-12) * (1.0 - jnp.eye(v.shape[0]))   # exact zeros on the diagonal


@_feature_loss("rkd", project=False)
def rkd_distance(teacher: jnp.ndarray, student: jnp.ndarray) -> jnp.ndarray:
  """RKD distance loss (Park et al., 2019): Huber between the two pairwise-distance matrices,
  each divided by its mean off-diagonal distance; averaged over the B(B-1) pairs."""
  def normalised(f):
    d = pairwise_distances(f)
    b = d.shape[0]
    return d / jnp.maximum(d.sum() / (b * (b - 1)), 1e-8)
  dt, ds = normalised(teacher), normalised(student)
  b = dt.shape[0]
  return jnp.sum(optax.huber_loss(ds, dt, delta=1.0)) / (b * (b - 1))


@_feature_loss("similarity", project=False)
def similarity_preserving(teacher: jnp.ndarray, student: jnp.ndarray) -> jnp.ndarray:
  """Similarity-preserving KD (Tung & Mori, 2019): ||G_s - G_t||_F^2 / B^2 with G = row-wise
  L2-normalised f f^T of the flattened features."""
  def gram(f):
    v = _flat(f)
    return _unit(v @ v.T)
  b = teacher.shape[0]
  return jnp.sum(jnp.square(gram(student) - gram(teacher))) / (b * b)
