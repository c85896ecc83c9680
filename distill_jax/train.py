"""The functional core: train state, the pure KD train step, prediction, and data parallelism.

Data parallelism uses ``jax.jit`` with ``NamedSharding`` over a 1-D mesh whose axis is
``data``: the batch is split along its first dimension, parameters and optimizer state are
replicated, and XLA inserts the gradient all-reduce. The loss is a mean over the *global*
batch, so a step on 8 devices computes the same numbers as on 1 (up to summation order).
"""
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from distill_jax import losses

DATA_AXIS = "data"


class TrainState(train_state.TrainState):
  """Flax's TrainState plus the run's base PRNG key; per-step keys are ``fold_in(rng, step)``."""
  rng: jax.Array


def make_optimizer(learning_rate: float, num_steps: int) -> optax.GradientTransformation:
  """Adam with cosine decay to zero over the phase's steps."""
  return optax.adam(optax.cosine_decay_schedule(learning_rate, max(num_steps, 1)))


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


def make_train_step(student_apply: Callable, teacher_apply: Optional[Callable] = None, *,
                    temperature: float = 1.0, alpha: float = 0.0,
                    mixup_alpha: float = 0.0) -> Callable:
  """Return the pure ``train_step(state, batch, teacher_params) -> (state, metrics)``.

  Without a teacher (teacher training, from-scratch baseline) the loss is plain cross-entropy;
  with one it is :func:`losses.hinton_kd`. The teacher runs in inference mode and under
  ``stop_gradient``: only the student is differentiated. With ``mixup_alpha > 0`` teacher and
  student see the same mixed-up inputs ("function matching": the student learns the teacher's
  function between training points too) and the label term uses the mixed labels.
  """

  def train_step(state: TrainState, batch: dict, teacher_params: Any = None):
    step_rng = jax.random.fold_in(state.rng, state.step)
    dropout_rng, mixup_rng = jax.random.split(step_rng)
    x, labels = batch["x"], batch["y"]
    lam = 1.0
    if mixup_alpha > 0:
      x, lam = mixup(x, mixup_rng, mixup_alpha)
    if teacher_apply is not None:
      teacher_logits = jax.lax.stop_gradient(teacher_apply({"params": teacher_params}, x))

    def label_loss(logits):
      ce = losses.cross_entropy(logits, labels)
      if mixup_alpha > 0:
        ce = lam * ce + (1.0 - lam) * losses.cross_entropy(logits, jnp.roll(labels, 1))
      return ce

    def loss_fn(params):
      logits = student_apply({"params": params}, x, train=True, rngs={"dropout": dropout_rng})
      if teacher_apply is None:
        return label_loss(logits), logits
      return losses.hinton_kd(logits, teacher_logits, labels, temperature, alpha,
                              hard=label_loss(logits)), logits

    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    metrics = {"loss": loss,
               "accuracy": jnp.mean(jnp.argmax(logits, -1) == labels),
               "grad_norm": optax.global_norm(grads)}
    return state.apply_gradients(grads=grads), metrics

  return train_step


def make_mesh(devices: Optional[list] = None) -> Mesh:
  """A 1-D ``data`` mesh over ``devices`` (default: all devices of all processes)."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def replicate(tree: Any, mesh: Mesh, copy: bool = False) -> Any:
  """Put ``tree`` on every device of ``mesh``. ``copy=True`` never aliases the input buffers,
  which a donated train state needs when its arrays are shared (e.g. copied from a teacher)."""
  return jax.device_put(tree, replicated(mesh), may_alias=False if copy else None)


def shard_batch(batch: dict, mesh: Mesh) -> dict:
  """Place this process's numpy batch on the mesh, split along the ``data`` axis."""
  size = mesh.shape[DATA_AXIS]
  for key, value in batch.items():
    if value.shape[0] % size:
      raise ValueError(f"batch[{key!r}] has {value.shape[0]} examples, not divisible by the "
                       f"{size} devices of the '{DATA_AXIS}' mesh axis; choose a batch_size "
                       f"that is a multiple of {size}")
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


def jit_train_step(train_step: Callable, mesh: Mesh, state: TrainState) -> Callable:
  """Compile ``train_step`` for ``mesh``: state replicated and donated, batch sharded."""
  repl = replicated(mesh)
  state_sharding = jax.tree.map(lambda _: repl, state)
  return jax.jit(train_step, in_shardings=(state_sharding, batch_sharding(mesh), repl),
                 out_shardings=(state_sharding, repl), donate_argnums=(0,))


def predict(apply_fn: Callable, params: Any, x: np.ndarray, mesh: Mesh,
            batch_size: int = 512) -> np.ndarray:
  """Logits for every row of ``x`` as a numpy array, computed in sharded, padded batches."""
  from distill_jax.data import eval_batches  # local: data imports nothing from here
  forward = jax.jit(lambda p, xb: apply_fn({"params": p}, xb),
                    in_shardings=(replicated(mesh), batch_sharding(mesh)))
  params = replicate(params, mesh)
  outputs = []
  for batch in eval_batches(x, np.zeros(len(x), np.int32), batch_size, mesh.shape[DATA_AXIS]):
    logits = forward(params, shard_batch({"x": batch["x"]}, mesh)["x"])
    outputs.append(np.asarray(jax.device_get(logits))[batch["mask"] > 0])
  return np.concatenate(outputs)


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
  return float(np.mean(np.argmax(logits, -1) == labels))


def agreement(logits_a: np.ndarray, logits_b: np.ndarray) -> float:
  """Fraction of examples on which two models' top-1 predictions agree."""
  return float(np.mean(np.argmax(logits_a, -1) == np.argmax(logits_b, -1)))
