"""The functional core: train state, the one pure train step
``train_step(state, batch, teacher_params) -> (state, metrics)``, jitted with explicit
shardings. The loss is a mean over the global batch: 8 devices compute what 1 does. Batched
inference (evaluation, the teacher cache) is ``inference.py``.
"""
import re
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax.sharding import Mesh

from distill_jax import paths, sharding
from distill_jax.errors import InputError
from distill_jax.features import Resolved
from distill_jax.losses import Bound
from distill_jax.models import STATE_UPDATES


class TrainState(struct.PyTreeNode):
  """The student's params, the feature terms' projections (trained too, never exported), the
  optimizer state over both, the step and the run's base PRNG key (per step:
  ``fold_in(rng, step)``)."""
  step: jax.Array
  params: Any
  projections: Any
  opt_state: Any
  rng: jax.Array
  tx: optax.GradientTransformation = struct.field(pytree_node=False)

  @classmethod
  def create(cls, params: Any, tx: optax.GradientTransformation, rng: jax.Array,
             projections: Any = None) -> "TrainState":
    projections = projections or {}
    return cls(step=jnp.asarray(0, jnp.int32), params=params, projections=projections,
               opt_state=tx.init((params, projections)), rng=rng, tx=tx)

  def apply_gradients(self, grads: tuple) -> "TrainState":
    updates, opt_state = self.tx.update(grads, self.opt_state, (self.params, self.projections))
    params, projections = optax.apply_updates((self.params, self.projections), updates)
    return self.replace(step=self.step + 1, params=params, projections=projections,
                        opt_state=opt_state)


SCHEDULES = ("cosine", "steps", "constant")
OPTIMIZERS = ("adam", "sgd")


def learning_rate_schedule(learning_rate: float, num_steps: int, schedule: str = "cosine",
                           boundaries: Sequence[float] = (), decay: float = 0.1
                           ) -> optax.Schedule:
  """The phase's learning rate by step (also what the loop logs): ``cosine`` decays to zero
  over ``num_steps``; ``steps`` multiplies it by ``decay`` at each of ``boundaries``, given
  as fractions of the phase (0.625: after 150 of 240 epochs), PyTorch's MultiStepLR;
  ``constant`` keeps it."""
  if schedule == "cosine":
    return optax.cosine_decay_schedule(learning_rate, max(num_steps, 1))
  if schedule == "constant":
    return optax.constant_schedule(learning_rate)
  if schedule == "steps":
    bad = [b for b in boundaries if not 0.0 < b <= 1.0]
    if bad or not boundaries:
      raise InputError(f"schedule 'steps' needs boundaries, fractions of the phase in (0, 1]; "
                       f"got {tuple(boundaries)}")
    scales: dict = {}     # two boundaries on one step (a short phase) both apply
    for b in boundaries:
      step = int(round(b * num_steps))
      scales[step] = scales.get(step, 1.0) * decay
    return optax.piecewise_constant_schedule(learning_rate, scales)
  raise InputError(f"unknown learning-rate schedule {schedule!r}; known: {SCHEDULES}")


def schedule_options(recipe) -> dict:
  """A phase recipe's schedule fields (config.teacher / config.student), with defaults."""
  return dict(schedule=recipe.get("schedule", "cosine"),
              boundaries=tuple(recipe.get("boundaries", ())), decay=recipe.get("decay", 0.1))


def optimizer_options(recipe) -> dict:
  """A phase recipe's fields for :func:`make_optimizer` after its first four arguments."""
  return dict(optimizer=recipe.get("optimizer", "adam"), momentum=recipe.get("momentum", 0.9),
              **schedule_options(recipe))


def frozen_paths(frozen: Sequence[str]) -> Callable[[str], bool]:
  """Whether a "/"-joined parameter path fullmatches one of the ``frozen`` regexes."""
  patterns = [re.compile(p) for p in frozen]
  return lambda path: any(p.fullmatch(path) for p in patterns)


def make_optimizer(learning_rate: float, num_steps: int, frozen: Sequence[str] = (),
                   weight_decay: float = 0.0, optimizer: str = "adam", momentum: float = 0.9,
                   schedule: str = "cosine", boundaries: Sequence[float] = (),
                   decay: float = 0.1) -> optax.GradientTransformation:
  """``optimizer`` ("adam", or "sgd" with ``momentum`` as PyTorch's SGD) over ``(params,
  projections)`` at :func:`learning_rate_schedule`; parameters whose "/"-joined path
  fullmatches a ``frozen`` regex get no updates (and no optimizer state: reused embeddings stay
  as they are, and the step skips their optimizer work). ``weight_decay``: L2 added to the
  gradient first (PyTorch's ``Adam``/``SGD(weight_decay)``, what GCN, GLNN and the CIFAR KD
  recipes mean by it; not AdamW's decoupled decay)."""
  lr = learning_rate_schedule(learning_rate, num_steps, schedule, boundaries, decay)
  if optimizer == "adam":
    base = optax.adam(lr)
  elif optimizer == "sgd":
    base = optax.sgd(lr, momentum=momentum or None)
  else:
    raise InputError(f"unknown optimizer {optimizer!r}; known: {OPTIMIZERS}")
  if weight_decay:
    base = optax.chain(optax.add_decayed_weights(weight_decay), base)
  if not frozen:
    return base
  is_frozen = frozen_paths(frozen)

  def labels(tree):
    params, projections = tree
    flat = paths.flatten(params)
    return (paths.unflatten({k: "frozen" if is_frozen(k) else "train" for k in flat}),
            jax.tree.map(lambda _: "train", projections))
  return optax.multi_transform({"train": base, "frozen": optax.set_to_zero()}, labels)


def with_statistics(params: Any, updates: dict, frozen: Callable[[str], bool]) -> Any:
  """``params`` with each leaf named in ``updates`` (``{path: array}``, a model's updated
  batch-norm statistics) replaced by its update: whatever the optimizer did to it (weight
  decay, Adam's step on a zero gradient) is discarded. ``frozen`` paths keep their
  statistics too (a frozen block is left as it was)."""
  def pick(path, leaf):
    name = "/".join(str(getattr(k, "key", k)) for k in path)
    seen.add(name)
    return updates[name] if name in updates and not frozen(name) else leaf
  seen: set = set()
  out = jax.tree_util.tree_map_with_path(pick, params)
  if stray := sorted(set(updates) - seen):
    raise InputError(f"state updates {stray[:4]} name no parameter of the student")
  return out


def mixup(batch: dict, keys: Sequence[str], rng: jax.Array, alpha: float) -> dict:
  """Mix each example's float inputs ``keys`` with its neighbour's in the batch:
  ``lam * x + (1 - lam) * roll(x)``, one ``lam ~ Beta(alpha, alpha)`` per batch (as in
  big_vision); ``mixup_lambda`` tells label terms how to mix the labels."""
  lam = jax.random.beta(rng, alpha, alpha)
  mixed = {k: lam * batch[k] + (1.0 - lam) * jnp.roll(batch[k], 1, axis=0) for k in keys}
  return dict(batch, **mixed, mixup_lambda=lam)


def dense_from_topk(values: jnp.ndarray, indices: jnp.ndarray, num_classes: int) -> jnp.ndarray:
  """Logits that are ``values`` at ``indices`` and -1e9 elsewhere: softmax puts all the mass on
  the cached top-k classes (the teacher's distribution renormalised over its top k)."""
  rows = jnp.arange(values.shape[0])[:, None]
  return jnp.full((values.shape[0], num_classes), -1e9, jnp.float32).at[rows, indices].set(
      values.astype(jnp.float32))


CACHED = "teacher_"          # batch keys of cached teacher outputs: teacher_<output name>


def teacher_outputs(teacher, teacher_params: Any, batch: dict, capture: bool,
                    num_classes: int, dtype: Optional[str]) -> tuple[dict, dict]:
  """The teacher's outputs (and features) for ``batch``: read from cached ``teacher_*`` keys
  when the batch has them, else one forward pass in inference mode (``dtype``: its inputs
  cast), all under ``stop_gradient``."""
  cached = {k[len(CACHED):]: v.astype(jnp.float32) for k, v in batch.items()
            if k.startswith(CACHED) and not k.startswith(CACHED + "topk")}
  if CACHED + "topk_values" in batch:
    values, indices = batch[CACHED + "topk_values"], batch[CACHED + "topk_indices"]
    if values.ndim == 2:      # one distribution per example: a dense copy is cheap
      cached["logits"] = dense_from_topk(values, indices, num_classes)
    else:                     # one per token (LMs): the "kd" term reads the top k directly
      cached.update(topk_values=values.astype(jnp.float32), topk_indices=indices)
  if cached and not capture:
    return cached, {}
  inputs = {k: (v.astype(dtype) if dtype and jnp.issubdtype(v.dtype, jnp.floating) else v)
            for k, v in batch.items()}
  out, feats = teacher.apply(teacher_params, inputs, capture=capture)
  out = {k: v.astype(jnp.float32) if jnp.issubdtype(v.dtype, jnp.floating) else v
         for k, v in out.items()}
  return jax.lax.stop_gradient(out), jax.lax.stop_gradient(feats)


def member_outputs(teacher_out: dict, bound: Bound) -> dict:
  """The teacher's outputs a term reads: an ensemble member's logits for ``teacher=i``."""
  if bound.member is None:
    return teacher_out
  key = f"logits@{bound.member}"
  if key not in teacher_out:
    members = sorted(k for k in teacher_out if k.startswith("logits@"))
    raise InputError(f"term {bound.name!r} reads teacher={bound.member}, but the teacher's "
                     f"members give {members or 'nothing (it is not an ensemble)'}")
  return dict(teacher_out, logits=teacher_out[key])


def is_resampled(step: jax.Array, fraction: float) -> jax.Array:
  """Whether step ``step`` trains on resampled data: ``fraction`` of the steps, spread evenly
  (step s when floor((s + 1) f) > floor(s f); f = 0.5: steps 1, 3, 5...)."""
  s = step.astype(jnp.float32)
  return jnp.floor((s + 1) * fraction) > jnp.floor(s * fraction)


def make_train_step(student, terms: Sequence[Bound], teacher=None, *,
                    features: Sequence[Resolved] = (), mixup_alpha: float = 0.0,
                    mixup_keys: Sequence[str] = ("x",), micro_batches: int = 1,
                    teacher_dtype: Optional[str] = None,
                    resample: Optional[Callable] = None, resample_fraction: float = 0.0,
                    frozen: Sequence[str] = ()):
  """The pure ``train_step(state, batch, teacher_params) -> (state, metrics)``.

  Loss: ``sum(weight * term)`` (``features``: the feature terms, resolved). The teacher runs
  only if a term reads it and the batch has no cached outputs, in inference mode under
  ``stop_gradient``. ``mixup_alpha > 0``: teacher and student see the same mixed-up
  ``mixup_keys``. ``micro_batches = k``: gradients of k micro-batches averaged before one
  update. ``resample(params, batch, rng) -> batch`` (on-policy distillation): on
  ``resample_fraction`` of the steps (:func:`is_resampled`) the batch is first replaced by
  what the student itself generates from it (its current parameters, no gradient); the
  terms then score that. ``frozen``: regexes of parameter paths that are not trained (as
  :func:`make_optimizer`'s): held under ``stop_gradient``, so no gradient is computed for them
  or for what only they need (the input gradient of the first trained layer after frozen
  embeddings), and the gradient norm is that of the trained parameters. A student with state
  (batch-norm statistics, ``outputs["state_updates"]`` in train mode) has those leaves of the
  new params set to their updates after the optimizer's step (they get no gradient; with
  ``micro_batches > 1``, the last micro-batch's). Metrics: the loss, each term, the gradient
  norm, accuracy (logits and labels), ``resampled`` (1 on resampled steps).
  """
  is_frozen = frozen_paths(frozen)

  def hold(params):   # the frozen leaves under stop_gradient
    if not frozen:
      return params
    return paths.unflatten({k: jax.lax.stop_gradient(v) if is_frozen(k) else v
                            for k, v in paths.flatten(params).items()})

  resolved = {r.index: r for r in features}
  capture = bool(resolved)
  reads_teacher = any(b.term.teacher for b in terms)
  if reads_teacher and teacher is None:
    raise ValueError("a term reads the teacher's outputs but no teacher was given")

  def micro_step(params, projections, batch, teacher_params, rng):
    dropout_rng, mixup_rng = jax.random.split(rng)
    if mixup_alpha > 0:
      batch = mixup(batch, mixup_keys, mixup_rng, mixup_alpha)

    def loss_fn(trainable):
      p, proj = trainable
      s_out, s_feats = student.apply(hold(p), batch, train=True, rngs={"dropout": dropout_rng},
                                     capture=capture)
      updates = s_out.pop(STATE_UPDATES, {})      # not an output the terms score
      t_out, t_feats = (teacher_outputs(teacher, teacher_params, batch, capture,
                                        s_out.get("logits", jnp.zeros((1, 1))).shape[-1],
                                        teacher_dtype)
                        if reads_teacher else (None, {}))
      values = {}
      for i, b in enumerate(terms):
        if i in resolved:
          value = resolved[i].loss(t_feats, s_feats, proj, s_out.get("token_mask"))
        else:
          value = b.term.fn(s_out, member_outputs(t_out, b) if b.term.teacher else None, batch,
                            **b.options)
        values[f"{b.name}" if b.name not in values else f"{b.name}_{i}"] = (b.weight, value)
      loss = sum(w * v for w, v in values.values())
      return loss, ({k: v for k, (_, v) in values.items()}, s_out, updates)

    (loss, (values, s_out, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        (params, projections))
    metrics = dict(values, loss=loss)
    if "logits" in s_out and "y" in batch:
      hits = jnp.argmax(s_out["logits"], -1)
      labelled = batch["y"] >= 0          # a label < 0: no label (cross_entropy skips it too)
      accuracy = jnp.sum((hits == batch["y"]) & labelled) / jnp.maximum(labelled.sum(), 1)
      if "mixup_lambda" in batch:   # credit each of the two mixed labels by its weight
        lam = batch["mixup_lambda"]
        other = batch["y_mix"] if "y_mix" in batch else jnp.roll(batch["y"], 1)
        accuracy = jnp.mean(lam * accuracy + (1.0 - lam) * jnp.mean(hits == other))
      metrics["accuracy"] = accuracy
    return grads, metrics, updates

  def train_step(state: TrainState, batch: dict, teacher_params: Any = None):
    rng = jax.random.fold_in(state.rng, state.step)
    resampled = None
    if resample is not None and resample_fraction > 0:
      # A branch, not a select: the off-policy steps skip the sampling entirely.
      resampled = is_resampled(state.step, resample_fraction)
      params = jax.lax.stop_gradient(state.params)
      batch = jax.lax.cond(resampled,
                           lambda b: resample(params, b, jax.random.fold_in(rng, 1 << 20)),
                           lambda b: b, batch)
    if micro_batches == 1:
      grads, metrics, updates = micro_step(state.params, state.projections, batch,
                                           teacher_params, rng)
    else:
      split = jax.tree.map(
          lambda v: v.reshape((micro_batches, v.shape[0] // micro_batches) + v.shape[1:]), batch)

      def body(carry, inputs):
        i, micro = inputs
        grads, metrics, updates = micro_step(state.params, state.projections, micro,
                                             teacher_params, jax.random.fold_in(rng, i))
        # Gradients and metrics summed; the statistics are the last micro-batch's.
        return (jax.tree.map(jnp.add, carry[0], (grads, metrics)), updates), None

      zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(
          lambda: micro_step(state.params, state.projections,
                             jax.tree.map(lambda v: v[0], split), teacher_params, rng)))
      (total, updates), _ = jax.lax.scan(body, (zeros[:2], zeros[2]),
                                         (jnp.arange(micro_batches), split))
      grads, metrics = jax.tree.map(lambda t: t / micro_batches, total)
    metrics["grad_norm"] = optax.global_norm(grads)
    if resampled is not None:
      metrics["resampled"] = resampled.astype(jnp.float32)
    new = state.apply_gradients(grads)
    if updates:
      new = new.replace(params=with_statistics(new.params, updates, is_frozen))
    return new, metrics

  return train_step


def jit_train_step(train_step, mesh: Mesh, state_shardings: Any, teacher_shardings: Any = None):
  """Compile ``train_step`` for ``mesh``: the state placed by ``state_shardings`` and donated,
  the batch split over the batch axes, the teacher by ``teacher_shardings`` (or replicated)."""
  repl = sharding.replicated(mesh)
  return jax.jit(train_step,
                 in_shardings=(state_shardings, sharding.batch_sharding(mesh),
                               teacher_shardings if teacher_shardings is not None else repl),
                 out_shardings=(state_shardings, repl), donate_argnums=(0,))
