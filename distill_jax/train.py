"""The functional core: train state, the pure KD train step, and prediction.

``train_step(state, batch, teacher_params) -> (state, metrics)`` is pure and jitted by
:func:`jit_train_step` with explicit shardings (see ``sharding.py``): by default the batch is
split over the ``data`` mesh axis and parameters and optimizer state are replicated, and XLA
inserts the gradient all-reduce. The loss is a mean over the *global* batch, so a step on 8
devices computes the same numbers as on 1 (up to summation order).
"""
import re
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state
from jax.sharding import Mesh

from distill_jax import features as features_lib
from distill_jax import losses, paths, sharding


class TrainState(train_state.TrainState):
  """Flax's TrainState plus the run's base PRNG key; per-step keys are ``fold_in(rng, step)``."""
  rng: jax.Array


def learning_rate_schedule(learning_rate: float, num_steps: int) -> optax.Schedule:
  """Cosine decay to zero over the phase's steps (also what the loop logs)."""
  return optax.cosine_decay_schedule(learning_rate, max(num_steps, 1))


def make_optimizer(learning_rate: float, num_steps: int,
                   frozen: Sequence[str] = ()) -> optax.GradientTransformation:
  """Adam with :func:`learning_rate_schedule`; parameters whose "/"-joined path fullmatches a
  ``frozen`` regex get no updates (and no Adam moments: reused embeddings stay as they are,
  and the step skips their optimizer work)."""
  adam = optax.adam(learning_rate_schedule(learning_rate, num_steps))
  if not frozen:
    return adam
  patterns = [re.compile(p) for p in frozen]

  def labels(params):
    flat = paths.flatten(params)
    return paths.unflatten({k: "frozen" if any(p.fullmatch(k) for p in patterns) else "train"
                            for k in flat})
  return optax.multi_transform({"train": adam, "frozen": optax.set_to_zero()}, labels)


def init_params(model, input_shape: tuple[int, ...], rng: jax.Array) -> Any:
  return model.init(rng, jnp.zeros((1,) + tuple(input_shape), jnp.float32))["params"]


def create_state(model, params: Any, tx: optax.GradientTransformation,
                 rng: jax.Array) -> TrainState:
  return TrainState.create(apply_fn=model.apply, params=params, tx=tx, rng=rng)


def mixup(x: jnp.ndarray, rng: jax.Array, alpha: float) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Mix each example with its neighbour in the batch: ``lam * x + (1 - lam) * roll(x)``.

  One ``lam ~ Beta(alpha, alpha)`` per batch (as in big_vision). Returns (mixed x, lam).
  """
  lam = jax.random.beta(rng, alpha, alpha)
  return lam * x + (1.0 - lam) * jnp.roll(x, 1, axis=0), lam


def dense_from_topk(values: jnp.ndarray, indices: jnp.ndarray, num_classes: int) -> jnp.ndarray:
  """Logits that are ``values`` at ``indices`` and -1e9 elsewhere: softmax puts all the mass on
  the cached top-k classes (the teacher's distribution renormalised over its top k)."""
  rows = jnp.arange(values.shape[0])[:, None]
  return jnp.full((values.shape[0], num_classes), -1e9, jnp.float32).at[rows, indices].set(
      values.astype(jnp.float32))


def make_train_step(student_apply: Callable, teacher_apply: Optional[Callable] = None, *,
                    temperature: float = 1.0, alpha: float = 0.0, mixup_alpha: float = 0.0,
                    micro_batches: int = 1, teacher_dtype: Optional[str] = None,
                    logit_loss: str = "kd", logit_options: Optional[dict] = None,
                    logit_weight: float = 1.0,
                    features: Optional[features_lib.FeatureDistillation] = None) -> Callable:
  """Return the pure ``train_step(state, batch, teacher_params) -> (state, metrics)``.

  Without a teacher (teacher training, from-scratch baseline) the loss is plain cross-entropy;
  with one it is :func:`losses.hinton_kd`. The teacher runs in inference mode under
  ``stop_gradient``: only the student is differentiated. If the batch carries cached teacher
  outputs (``teacher_logits``, or ``teacher_topk_values``/``teacher_topk_indices``) they are
  used instead of a teacher forward pass.

  ``mixup_alpha > 0``: teacher and student see the same mixed-up inputs ("function matching")
  and the label term uses the mixed labels. ``micro_batches = k``: the batch is split into k
  equal micro-batches whose gradients are averaged before one update (same result as the full
  batch, 1/k of the activation memory). ``teacher_dtype="bfloat16"``: the teacher's inputs are
  cast (pass bf16 teacher params too); its logits come back as float32, and the student's
  master weights stay float32.

  ``logit_loss`` names a ``losses.LOGIT_LOSSES`` entry ("kd": Hinton with ``alpha``; "dkd"),
  with ``logit_options``, weighted by ``logit_weight``. ``features``: the state's params are
  ``{"student", "projection"}`` (see ``features.py``) and the weighted feature losses of the
  paired intermediate features are added; ``logit_weight=0`` trains on features alone.
  """
  options = dict(logit_options or {})
  if logit_loss == "kd":
    options.setdefault("alpha", alpha)
  logit_fn = losses.LOGIT_LOSSES.get(logit_loss)

  def teacher_logits_for(x, batch, teacher_params, num_classes):
    if "teacher_logits" in batch:
      return batch["teacher_logits"].astype(jnp.float32)
    if "teacher_topk_values" in batch:
      return dense_from_topk(batch["teacher_topk_values"], batch["teacher_topk_indices"],
                             num_classes)
    return teacher_apply({"params": teacher_params}, teacher_input(x)).astype(jnp.float32)

  def teacher_input(x):
    return x.astype(teacher_dtype) if teacher_dtype else x

  def micro_step(params, batch, teacher_params, rng):
    dropout_rng, mixup_rng = jax.random.split(rng)
    x, labels = batch["x"], batch["y"]
    lam = 1.0
    if mixup_alpha > 0:
      x, lam = mixup(x, mixup_rng, mixup_alpha)

    def label_loss(logits):
      ce = losses.cross_entropy(logits, labels)
      if mixup_alpha > 0:
        ce = lam * ce + (1.0 - lam) * losses.cross_entropy(logits, jnp.roll(labels, 1))
      return ce

    def loss_fn(p):
      student_kwargs = dict(train=True, rngs={"dropout": dropout_rng})
      if features is None:
        logits = student_apply({"params": p}, x, **student_kwargs)
      else:
        logits, student_features = features_lib.capture(
            student_apply, p[features_lib.STUDENT], x, **student_kwargs)
      if teacher_apply is None and not any(k.startswith("teacher_") for k in batch):
        return label_loss(logits), logits
      if features is None:
        teacher_logits = teacher_logits_for(x, batch, teacher_params, logits.shape[-1])
        feature_loss = 0.0
      else:
        teacher_logits, teacher_features = features_lib.capture(
            teacher_apply, teacher_params, teacher_input(x))
        feature_loss, _ = features.loss(teacher_features, student_features,
                                        p[features_lib.PROJECTION])
      teacher_logits = jax.lax.stop_gradient(teacher_logits.astype(jnp.float32))
      logit_term = logit_fn(logits, teacher_logits, labels, temperature, label_loss(logits),
                            **options)
      return logit_weight * logit_term + feature_loss, logits

    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    hits = jnp.argmax(logits, -1)
    accuracy = jnp.mean(hits == labels)
    if mixup_alpha > 0:   # credit each of the two mixed labels by its weight
      accuracy = lam * accuracy + (1.0 - lam) * jnp.mean(hits == jnp.roll(labels, 1))
    return grads, loss, accuracy

  def train_step(state: TrainState, batch: dict, teacher_params: Any = None):
    rng = jax.random.fold_in(state.rng, state.step)
    if micro_batches == 1:
      grads, loss, acc = micro_step(state.params, batch, teacher_params, rng)
    else:
      split = jax.tree.map(
          lambda v: v.reshape((micro_batches, v.shape[0] // micro_batches) + v.shape[1:]), batch)

      def body(carry, inputs):
        i, micro = inputs
        g, l, a = micro_step(state.params, micro, teacher_params, jax.random.fold_in(rng, i))
        return jax.tree.map(jnp.add, carry, (g, l, a)), None

      zeros = (jax.tree.map(jnp.zeros_like, state.params), 0.0, 0.0)
      total, _ = jax.lax.scan(body, zeros, (jnp.arange(micro_batches), split))
      grads, loss, acc = jax.tree.map(lambda t: t / micro_batches, total)
    metrics = {"loss": loss, "accuracy": acc, "grad_norm": optax.global_norm(grads)}
    return state.apply_gradients(grads=grads), metrics

  return train_step


def jit_train_step(train_step: Callable, mesh: Mesh, state_shardings: Any,
                   teacher_shardings: Any = None) -> Callable:
  """Compile ``train_step`` for ``mesh``: the state placed by ``state_shardings`` and donated,
  the batch split over the batch axes, the teacher by ``teacher_shardings`` (or replicated)."""
  repl = sharding.replicated(mesh)
  return jax.jit(train_step,
                 in_shardings=(state_shardings, sharding.batch_sharding(mesh),
                               teacher_shardings if teacher_shardings is not None else repl),
                 out_shardings=(state_shardings, repl), donate_argnums=(0,))


def predict(apply_fn: Callable, params: Any, x: np.ndarray, mesh: Mesh,
            batch_size: int = 512) -> np.ndarray:
  """Logits for every row of ``x`` as a numpy array, computed in sharded, padded batches.

  Every process passes the same ``x`` and gets all the logits back.
  """
  from distill_jax.data import eval_batches  # local: data imports nothing from here
  repl = sharding.replicated(mesh)
  forward = jax.jit(lambda p, xb: apply_fn({"params": p}, xb),
                    in_shardings=(None, sharding.batch_sharding(mesh)), out_shardings=repl)
  ways = sharding.batch_size_per_step(mesh)
  outputs = []
  for batch in eval_batches(x, np.zeros(len(x), np.int32), batch_size, ways):
    local = sharding.process_batch({"x": batch["x"]})
    logits = forward(params, sharding.shard_batch(local, mesh)["x"])
    outputs.append(np.asarray(jax.device_get(logits))[batch["mask"] > 0])
  return np.concatenate(outputs)


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
  return float(np.mean(np.argmax(logits, -1) == labels))


def agreement(logits_a: np.ndarray, logits_b: np.ndarray) -> float:
  """Fraction of examples on which two models' top-1 predictions agree."""
  return float(np.mean(np.argmax(logits_a, -1) == np.argmax(logits_b, -1)))
