"""Loss terms: small pure functions, each stating its math, registered by name; a phase sums
``weight * term`` over its ``(name, weight, options)``. Output terms are
``fn(student, teacher, batch, **options)`` over named outputs; feature terms are
``fn(teacher_feature, student_feature[, mask], **options)`` per pair in ``pairs``.
"""
import dataclasses
import inspect
import math
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import optax

from distill_jax.errors import InputError
from distill_jax.registry import Registry

FEATURES = "features"


@dataclasses.dataclass(frozen=True)
class Term:
  fn: Callable
  reads: tuple[str, ...]       # outputs it reads ("logits", "pooled", ...), "labels", "features"
  teacher: bool = True         # whether it reads the teacher's side
  project: bool = False        # feature terms: a learned projection when shapes differ

  @property
  def features(self) -> bool:
    return FEATURES in self.reads

  @property
  def masked(self) -> bool:
    return "mask" in inspect.signature(self.fn).parameters


TERMS: Registry[Term] = Registry("loss term")


def term(name: str, *, reads: Sequence[str], teacher: bool = True,
         project: bool = False) -> Callable[[Callable], Callable]:
  """Decorator registering ``fn`` as loss term ``name`` (see the module docstring)."""
  def add(fn: Callable) -> Callable:
    TERMS.register(name)(Term(fn, tuple(reads), teacher, project))
    return fn
  return add


@dataclasses.dataclass(frozen=True)
class Bound:
  """One configured term: ``weight * term(**options)``; feature terms also carry pairs."""
  name: str
  weight: float
  term: Term
  options: Mapping[str, Any]
  pairs: tuple = ()            # feature terms: (teacher pattern, student pattern)
  layer_pairs: str = ""        # feature terms: "prefix_{}" pairs each student layer with the
                               # teacher layer it was initialised from
  member: Optional[int] = None  # an ensemble teacher's member this term reads (option teacher=i)


def bind(specs: Sequence, what: str) -> list[Bound]:
  """Check ``(name, weight, options)`` specs against the registry and the terms' signatures."""
  bound = []
  for i, spec in enumerate(specs):
    where = f"{what}[{i}]"
    if not isinstance(spec, (tuple, list)) or len(spec) not in (2, 3):
      raise InputError(f"{where}: {spec!r} is not (term, weight[, options])")
    name, weight, options = spec[0], spec[1], dict(spec[2] if len(spec) == 3 else {})
    t = TERMS.get(name)
    if not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
      raise InputError(f"{where}: weight of {name!r} is {weight!r}; it must be a finite "
                       "number >= 0")
    pairs, template = (), ""
    if t.features:
      pairs = tuple(tuple(p) for p in options.pop("pairs", ()))
      template = options.pop("layer_pairs", "")
      if not (pairs or template) or any(len(p) != 2 for p in pairs) or (
          template and "{}" not in template):
        raise InputError(f"{where}: feature term {name!r} needs pairs=((teacher feature, "
                         "student feature), ...) or layer_pairs='prefix_{}'")
    member = options.pop("teacher", None) if t.teacher and not t.features else None
    if member is not None and (not isinstance(member, int) or isinstance(member, bool)
                               or member < 0):
      raise InputError(f"{where}: {name!r} option teacher={member!r} must be an ensemble "
                       "member's index (an integer >= 0)")
    positional = 2 if t.features else 3      # (teacher, student) or (student, teacher, batch)
    accepted = set(list(inspect.signature(t.fn).parameters)[positional:]) - {"mask"}
    unknown = sorted(set(options) - accepted)
    if unknown:
      raise InputError(f"{where}: term {name!r} has no option(s) {unknown}; it takes "
                       f"{sorted(accepted)}")
    for key, low in (("temperature", 0), ("beta", 0), ("heads", 0), ("alpha", None)):
      v = options.get(key, 1)
      if not (isinstance(v, (int, float)) and math.isfinite(v) and (v > low if low is not None
                                                                    else v >= 0)):
        raise InputError(f"{where}: {name!r} option {key}={v!r} must be "
                         f"{'> 0' if low is not None else '>= 0'}")
    bound.append(Bound(name, float(weight), t, options, pairs, template, member))
  return bound


# --- output terms -----------------------------------------------------------------------------

def cross_entropy(logits: jnp.ndarray, labels: jnp.ndarray,
                  weights: Optional[jnp.ndarray] = None) -> jnp.ndarray:
  """CE(y, s) = -log softmax(s)[y], averaged over the labelled examples: a label < 0 marks an
  example without one (a graph's nodes outside the training set), which counts for nothing.
  ``weights`` (broadcast to the labels' shape) scale each example's term (mixup's lambda)."""
  labelled = labels >= 0
  per_example = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.maximum(labels, 0))
  if weights is not None:
    per_example = per_example * jnp.broadcast_to(weights, per_example.shape)
  return jnp.where(labelled, per_example, 0.0).sum() / jnp.maximum(labelled.sum(), 1)


def kl_divergence(teacher_logits: jnp.ndarray, student_logits: jnp.ndarray,
                  temperature: float = 1.0) -> jnp.ndarray:
  """KL(softmax(t/T) || softmax(s/T)) = sum_c p_c (log p_c - log q_c), averaged."""
  log_p = jax.nn.log_softmax(teacher_logits / temperature, axis=-1)
  log_q = jax.nn.log_softmax(student_logits / temperature, axis=-1)
  return (jnp.exp(log_p) * (log_p - log_q)).sum(-1).mean()


def reverse_kl_divergence(teacher_logits: jnp.ndarray, student_logits: jnp.ndarray,
                          temperature: float = 1.0) -> jnp.ndarray:
  """KL(softmax(s/T) || softmax(t/T)) = sum_c q_c (log q_c - log p_c), averaged: mode-seeking
  (the student is punished for mass where the teacher has little, not for missing modes)."""
  return kl_divergence(student_logits, teacher_logits, temperature)


def generalized_jsd(teacher_logits: jnp.ndarray, student_logits: jnp.ndarray, beta: float,
                    temperature: float = 1.0) -> jnp.ndarray:
  """GKD's generalised Jensen-Shannon divergence (Agarwal et al., 2024), averaged:
  ``beta KL(p || m) + (1 - beta) KL(q || m)`` with ``m = beta p + (1 - beta) q``, p the
  teacher's and q the student's softmax at T. beta -> 0 behaves like forward KL, beta -> 1 like
  reverse KL (both scaled by beta, 1 - beta); 0.5 is the symmetric JSD."""
  log_p = jax.nn.log_softmax(teacher_logits / temperature, axis=-1)
  log_q = jax.nn.log_softmax(student_logits / temperature, axis=-1)
  log_m = jnp.logaddexp(jnp.log(beta) + log_p, jnp.log1p(-beta) + log_q)
  kl_pm = (jnp.exp(log_p) * (log_p - log_m)).sum(-1)
  kl_qm = (jnp.exp(log_q) * (log_q - log_m)).sum(-1)
  return (beta * kl_pm + (1.0 - beta) * kl_qm).mean()


def topk_kl_divergence(values: jnp.ndarray, indices: jnp.ndarray, student_logits: jnp.ndarray,
                       temperature: float = 1.0) -> jnp.ndarray:
  """Forward KL from a teacher known only by its top-k logits ``values`` at vocabulary ids
  ``indices`` (..., k): ``sum_k p_k (log p_k - log q_k)``, p the softmax of the k values at T
  (the teacher renormalised over its top k), q the student's full softmax at T read at those
  ids. It never builds a dense teacher distribution: O(k) per token beyond the student's own
  log-softmax."""
  log_p = jax.nn.log_softmax(values.astype(jnp.float32) / temperature, axis=-1)
  scaled = student_logits / temperature
  # log q at the k ids as gathered logit - logsumexp (as cross-entropy does): no (tokens,
  # vocabulary) log-softmax array is written.
  log_q = (jnp.take_along_axis(scaled, indices, axis=-1)
           - jax.nn.logsumexp(scaled, axis=-1, keepdims=True))
  return (jnp.exp(log_p) * (log_p - log_q)).sum(-1).mean()


@term("ce", reads=("logits", "labels"), teacher=False)
def ce(student: dict, teacher: Any, batch: dict) -> jnp.ndarray:
  """Label cross-entropy; with mixup, ``lam * CE(y) + (1 - lam) * CE(y of the neighbour)``
  (``y_mix`` when the host mixed the batch, else the labels rolled as the step's mixup rolls)."""
  logits, labels = student["logits"], batch["y"]
  loss = cross_entropy(logits, labels)
  if "mixup_lambda" in batch:
    lam = batch["mixup_lambda"]
    other = batch["y_mix"] if "y_mix" in batch else jnp.roll(labels, 1)
    # lam: one per batch (the step's mixup) or one per example (the host's, every row alike)
    loss = cross_entropy(logits, labels, lam) + cross_entropy(logits, other, 1.0 - lam)
  return loss


@term("kd", reads=("logits",))
def kd(student: dict, teacher: dict, batch: dict, temperature: float = 1.0) -> jnp.ndarray:
  """Hinton et al. (2015): T^2 * KL(softmax(t/T) || softmax(s/T)). The T^2 keeps the soft
  targets' gradients on the labels' scale when T changes; Hinton's objective is
  ``(("kd", alpha, {"temperature": T}), ("ce", 1 - alpha, {}))``."""
  if "logits" not in teacher and "topk_values" in teacher:   # distill.cache="topk", tokens
    return temperature ** 2 * topk_kl_divergence(teacher["topk_values"],
                                                 teacher["topk_indices"], student["logits"],
                                                 temperature)
  return temperature ** 2 * kl_divergence(teacher["logits"], student["logits"], temperature)


@term("logit_mse", reads=("logits",))
def logit_mse(student: dict, teacher: dict, batch: dict) -> jnp.ndarray:
  """Squared distance between the logits, summed over classes and averaged over rows (Ba &
  Caruana 2014; Tang et al. 2019 distil BERT into a BiLSTM with it): unlike KL it keeps the
  logits' scale, which for two classes is most of what a teacher knows beyond the label."""
  diff = student["logits"] - _dense_teacher(teacher, "logit_mse").astype(jnp.float32)
  return (diff ** 2).sum(-1).mean()


def _dense_teacher(teacher: dict, name: str) -> jnp.ndarray:
  if "logits" not in teacher:
    raise InputError(f"term {name!r} needs the teacher's whole distribution; a top-k cache "
                     "(distill.cache='topk') serves only 'kd' (forward KL)")
  return teacher["logits"]


@term("reverse_kl", reads=("logits",))
def reverse_kl(student: dict, teacher: dict, batch: dict,
               temperature: float = 1.0) -> jnp.ndarray:
  """T^2 * KL(student || teacher) at temperature T (:func:`reverse_kl_divergence`)."""
  return temperature ** 2 * reverse_kl_divergence(_dense_teacher(teacher, "reverse_kl"),
                                                  student["logits"], temperature)


@term("jsd", reads=("logits",))
def jsd(student: dict, teacher: dict, batch: dict, beta: float = 0.5,
        temperature: float = 1.0) -> jnp.ndarray:
  """T^2 * generalised JSD(beta) at temperature T (:func:`generalized_jsd`), 0 < beta < 1."""
  if not 0 < beta < 1:
    raise InputError(f"term 'jsd': beta={beta} must be in (0, 1) (beta -> 0 is forward KL, "
                     "-> 1 reverse KL: use 'kd' or 'reverse_kl' for those)")
  return temperature ** 2 * generalized_jsd(_dense_teacher(teacher, "jsd"), student["logits"],
                                            beta, temperature)


def decoupled_kd(student_logits: jnp.ndarray, teacher_logits: jnp.ndarray, labels: jnp.ndarray,
                 temperature: float, alpha: float = 1.0, beta: float = 8.0) -> jnp.ndarray:
  """Decoupled KD (Zhao et al., 2022): alpha * TCKD + beta * NCKD, both scaled by T^2.

  TCKD = KL(b_t || b_s) over the binary split (target class, all others) of softmax(./T);
  NCKD = KL(p~_t || p~_s) over the softmax of the non-target logits alone. Classic KD couples
  NCKD to the teacher's target confidence (weight 1 - p_t); DKD weights it freely by beta.
  """
  target = jax.nn.one_hot(labels, student_logits.shape[-1], dtype=bool)

  def binary_log_probs(logits):
    log_p = jax.nn.log_softmax(logits / temperature, axis=-1)
    log_target = jnp.sum(jnp.where(target, log_p, 0.0), -1)
    log_rest = jax.nn.logsumexp(jnp.where(target, -jnp.inf, log_p), axis=-1)   # log(1 - p_t)
    return jnp.stack([log_target, log_rest], -1)

  def non_target_log_probs(logits):   # the target logit removed before the softmax
    return jax.nn.log_softmax(jnp.where(target, -1e9, logits / temperature), axis=-1)

  def kl(log_p, log_q):
    return (jnp.exp(log_p) * (log_p - log_q)).sum(-1)

  tckd = kl(binary_log_probs(teacher_logits), binary_log_probs(student_logits))
  nckd = kl(jnp.where(target, 0.0, non_target_log_probs(teacher_logits)),
            jnp.where(target, 0.0, non_target_log_probs(student_logits)))
  return temperature ** 2 * (alpha * tckd + beta * nckd).mean()


@term("dkd", reads=("logits", "labels"))
def dkd(student: dict, teacher: dict, batch: dict, temperature: float = 1.0,
        alpha: float = 1.0, beta: float = 8.0) -> jnp.ndarray:
  """:func:`decoupled_kd`; the paper's objective adds the label term: ``("ce", 1.0, {})``."""
  return decoupled_kd(student["logits"], teacher["logits"], batch["y"], temperature, alpha,
                      beta)


@term("embedding_mse", reads=("pooled",))
def embedding_mse(student: dict, teacher: dict, batch: dict) -> jnp.ndarray:
  """Mean over the batch of ||m_s - m_t||^2 of the pooled (unnormalised) sentence vectors:
  matches direction and length."""
  return jnp.mean(jnp.sum(jnp.square(student["pooled"] - teacher["pooled"]), -1))


@term("embedding_cosine", reads=("pooled",))
def embedding_cosine(student: dict, teacher: dict, batch: dict) -> jnp.ndarray:
  """Mean of 1 - cos(m_s, m_t): the direction alone, all that a normalised embedding sees."""
  return jnp.mean(1.0 - optax.cosine_similarity(student["pooled"], teacher["pooled"],
                                                epsilon=1e-9))


# --- feature terms (teacher feature, student feature): (B, ...) each ----------------------------

def _flat(f: jnp.ndarray) -> jnp.ndarray:
  return f.reshape((f.shape[0], -1)).astype(jnp.float32)


def _unit(v: jnp.ndarray, eps: float = 1e-8) -> jnp.ndarray:
  return v / jnp.maximum(jnp.linalg.norm(v, axis=-1, keepdims=True), eps)


def masked_mean(per_token: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
  """Mean of (B, L) values over the real (mask = 1) tokens."""
  m = mask.astype(jnp.float32)
  return (per_token * m).sum() / jnp.maximum(m.sum(), 1.0)


@term("hint", reads=(FEATURES,), project=True)
def hint(teacher: jnp.ndarray, student: jnp.ndarray, mask=None) -> jnp.ndarray:
  """FitNets (Romero et al., 2015): mean squared error of the (projected) features; for
  (B, L, H) token features with a token mask, the mean over the real tokens only (TinyBERT's
  hidden-state transfer)."""
  sq = jnp.square(student.astype(jnp.float32) - teacher.astype(jnp.float32))
  if mask is not None and sq.ndim == 3 and sq.shape[:2] == mask.shape:
    return masked_mean(jnp.mean(sq, -1), mask)
  return jnp.mean(sq)


def attention_map(f: jnp.ndarray) -> jnp.ndarray:
  """Zagoruyko & Komodakis (2017): mean over channels (last axis) of f^2, flattened over the
  positions and L2-normalised. A (B, D) feature counts as D positions of one channel."""
  f = f.astype(jnp.float32)
  a = jnp.square(f) if f.ndim == 2 else jnp.mean(jnp.square(f), axis=-1)
  return _unit(_flat(a))


@term("attention", reads=(FEATURES,), project=True)
def attention_transfer(teacher: jnp.ndarray, student: jnp.ndarray) -> jnp.ndarray:
  """Attention transfer: mean over the batch of ||Q_s - Q_t||^2 of the normalised maps."""
  return jnp.mean(jnp.sum(jnp.square(attention_map(student) - attention_map(teacher)), -1))


@term("cosine", reads=(FEATURES,), project=True)
def cosine_loss(teacher: jnp.ndarray, student: jnp.ndarray) -> jnp.ndarray:
  """Mean over the batch of 1 - cos(student_b, teacher_b) of the flattened features."""
  return jnp.mean(1.0 - jnp.sum(_unit(_flat(student)) * _unit(_flat(teacher)), -1))


def pairwise_distances(f: jnp.ndarray) -> jnp.ndarray:
  """Euclidean distances between the batch's flattened features, (B, B)."""
  v = _flat(f)
  sq = jnp.sum(jnp.square(v[:, None, :] - v[None, :, :]), -1)
  return jnp.sqrt(sq + 1e-12) * (1.0 - jnp.eye(v.shape[0]))   # exact zeros on the diagonal


@term("rkd", reads=(FEATURES,))
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


@term("similarity", reads=(FEATURES,))
def similarity_preserving(teacher: jnp.ndarray, student: jnp.ndarray) -> jnp.ndarray:
  """Similarity-preserving KD (Tung & Mori, 2019): ||G_s - G_t||_F^2 / B^2 with G = row-wise
  L2-normalised f f^T of the flattened features."""
  def gram(f):
    v = _flat(f)
    return _unit(v @ v.T)
  b = teacher.shape[0]
  return jnp.sum(jnp.square(gram(student) - gram(teacher))) / (b * b)


def relation_log_probs(a: jnp.ndarray, mask: jnp.ndarray, heads: int) -> jnp.ndarray:
  """log softmax(A_h A_h^T / sqrt(d)) over real keys: (B, heads, L, L) from (B, L, H)."""
  b, length, width = a.shape
  d = width // heads
  ah = a.astype(jnp.float32).reshape(b, length, heads, d).transpose(0, 2, 1, 3)
  scores = ah @ ah.transpose(0, 1, 3, 2) / jnp.sqrt(float(d))
  scores = jnp.where(mask[:, None, None, :] > 0, scores, -1e9)
  return jax.nn.log_softmax(scores, axis=-1)


@term("relation", reads=(FEATURES,))
def relation(teacher: jnp.ndarray, student: jnp.ndarray, mask=None,
             heads: int = 12) -> jnp.ndarray:
  """MiniLMv2 (Wang et al., 2021): self-attention relations of one kind of projection (pair
  queries with queries, keys with keys, values with values), split into ``heads`` heads;
  KL(R_t || R_s) per query token, averaged over heads and the real query tokens."""
  if mask is None:
    mask = jnp.ones(teacher.shape[:2], jnp.int32)
  log_t, log_s = relation_log_probs(teacher, mask, heads), relation_log_probs(student, mask, heads)
  kl = jnp.sum(jnp.exp(log_t) * (log_t - log_s), -1).mean(1)       # (B, L)
  return masked_mean(kl, mask)


@term("block", reads=("hidden",), teacher=False)
def block(student: dict, teacher: Any, batch: dict, term: str = "hint") -> jnp.ndarray:
  """Blockwise training (docs/blockwise.md): the registered feature term ``term`` between the
  teacher's hidden state leaving the block (``batch["block_out"]``) and the student block's
  (``hidden``), over the real tokens when the term takes a mask."""
  t = TERMS.get(term)
  if not t.features:
    raise InputError(f"term 'block': option term={term!r} is not a feature term; use one of "
                     f"{[n for n in TERMS.names() if TERMS.get(n).features]}")
  if t.masked:
    return t.fn(batch["block_out"], student["hidden"], mask=student.get("token_mask"))
  return t.fn(batch["block_out"], student["hidden"])
