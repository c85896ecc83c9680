"""Shared pieces of the benchmarks: the benchmark pair, FLOP counts, timing, the matmul ceiling."""
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from distill_jax import losses, models, train

TEACHER = (1200, 1200)     # 784-1200-1200-10
STUDENT = (800, 800)       # 784-800-800-10
INPUT, CLASSES, BATCH = 784, 10, 256


HINTON = (("kd", 0.9, {"temperature": 4.0}), ("ce", 0.1, {}))


def mlp(hidden):
  return models.build({"name": "mlp", "hidden": hidden}, {"num_classes": CLASSES})


def dense_flops(hidden, batch=BATCH) -> float:
  """Multiply-adds x 2 of one forward pass of an MLP 784-hidden-10."""
  dims = (INPUT,) + tuple(hidden) + (CLASSES,)
  return 2.0 * batch * sum(a * b for a, b in zip(dims, dims[1:]))


def kd_step_flops(batch=BATCH, teacher_forward=True) -> float:
  """Model FLOPs (the MFU convention): teacher forward + student forward and backward, with
  backward = 2x forward. The step executes about 10% fewer (:func:`executed_flops`): nothing
  needs the gradient with respect to the input, so the first layer's backward is one matmul."""
  return (dense_flops(TEACHER, batch) if teacher_forward else 0.0) + 3 * dense_flops(STUDENT, batch)


def executed_flops(jitted: Callable, *args) -> float:
  """FLOPs that XLA's cost analysis counts for one call of ``jitted(*args)``, as compiled."""
  cost = jitted.lower(*args).compile().cost_analysis()
  return float((cost[0] if isinstance(cost, list) else cost)["flops"])


def steps_per_second(step: Callable[[], object], seconds: float = 3.0, warmup: int = 5) -> float:
  """Run ``step`` (which must block on its result) repeatedly; best rate over 3 windows."""
  for _ in range(warmup):
    step()
  best = 0.0
  for _ in range(3):
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds / 3:
      step()
      n += 1
    best = max(best, n / (time.perf_counter() - start))
  return best


def matmul_flops_per_second(n: int = 2048, seconds: float = 3.0) -> float:
  """This machine's practical dense float32 matmul ceiling, measured with XLA."""
  a = jnp.asarray(np.random.default_rng(0).normal(size=(n, n)), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  rate = steps_per_second(lambda: f(a).block_until_ready(), seconds=seconds, warmup=2)
  return rate * 2.0 * n ** 3


def step_matmuls(batch=BATCH) -> list[tuple[str, Callable, tuple, tuple, float]]:
  """The matmuls one KD step of the pair executes, as (name, f, lhs shape, rhs shape, FLOPs):
  teacher and student forward, the student's weight gradients (which contract over the
  batch) and its input gradients (none for the first layer: nothing needs d loss / d x).
  Each multiplies a batch x a by an a x b matrix in some layout: 2 * batch * a * b FLOPs."""
  out = []
  for who, hidden in (("teacher", TEACHER), ("student", STUDENT)):
    dims = (INPUT,) + tuple(hidden) + (CLASSES,)
    for i, (a, b) in enumerate(zip(dims, dims[1:])):
      flops = 2.0 * batch * a * b
      out.append((f"{who} forward {batch}x{a} @ {a}x{b}", lambda x, w: x @ w, (batch, a),
                  (a, b), flops))
      if who == "student":
        out.append((f"student weight grad {a}x{batch} @ {batch}x{b}", lambda x, g: x.T @ g,
                    (batch, a), (batch, b), flops))
        if i:
          out.append((f"student input grad {batch}x{b} @ {b}x{a}", lambda g, w: g @ w.T,
                      (batch, b), (a, b), flops))
  return out


def matmul_seconds(f: Callable, lhs: tuple, rhs: tuple, seconds: float = 0.5) -> float:
  """Seconds per call of the jitted ``f`` on random float32 operands of these shapes."""
  rng = np.random.default_rng(0)
  a, b = (jnp.asarray(rng.normal(size=s), jnp.float32) for s in (lhs, rhs))
  g = jax.jit(f)
  return 1.0 / steps_per_second(lambda: g(a, b).block_until_ready(), seconds=seconds, warmup=2)


def synthetic_batch(seed=0, batch=BATCH):
  rng = np.random.default_rng(seed)
  return {"x": rng.normal(size=(batch, INPUT)).astype(np.float32),
          "y": rng.integers(0, CLASSES, batch).astype(np.int32)}


def jax_kd_step(teacher_forward=True):
  """The jitted distill_jax KD step on one device, its state, teacher params and models."""
  teacher, student = mlp(TEACHER), mlp(STUDENT)
  example = synthetic_batch(batch=2)
  tparams = teacher.init(jax.random.PRNGKey(0), example)
  sparams = student.init(jax.random.PRNGKey(1), example)
  state = train.TrainState.create(sparams, train.make_optimizer(1e-3, 10_000),
                                  jax.random.PRNGKey(2))
  step = train.make_train_step(student, losses.bind(HINTON, "terms"),
                               teacher if teacher_forward else None)
  return jax.jit(step, donate_argnums=(0,)), state, tparams, teacher, student


def epoch_run(workdir: str, num_examples: int = 60_000, **overrides):
  """A :class:`runner.Run` over MNIST-sized synthetic data (num_examples x 784) on one device,
  with the benchmark's recipe (batch 256, logging every 10 steps, checkpoints every 200)."""
  import dataclasses
  import os
  from distill_jax import runner
  from distill_jax.config import apply_overrides, defaults
  from distill_jax.loop import MetricsWriter
  from distill_jax.data import Dataset
  from distill_jax.tasks.classification import as_task_data
  rng = np.random.default_rng(0)
  data = as_task_data(Dataset("synthetic", rng.normal(size=(num_examples, INPUT)).astype(np.float32),
                              rng.integers(0, CLASSES, num_examples).astype(np.int32),
                              np.zeros((1, INPUT), np.float32), np.zeros(1, np.int32), CLASSES),
                      {"source": "synthetic"})
  config = apply_overrides(defaults(), {
      "batch_size": BATCH, "log_every": 10, "checkpoint_every": 200, "mesh": {"data": 1},
      "student.steps": num_examples // BATCH, "student.mixup": 0.0, "distill.terms": HINTON,
      **overrides})
  run = runner.start(config, workdir, data, metrics=False)
  # metrics.jsonl without TensorBoard (whose first write imports TensorFlow: seconds)
  return dataclasses.replace(run, writer=MetricsWriter(os.path.join(workdir, "metrics.jsonl")))


def epoch_steps_per_second(run, phase: str, student, params, tparams, teacher) -> float:
  """One epoch of ``phase`` through ``runner.train_phase``; steps per second from the first
  logged step (compilation done) to the end (checkpoint writes included)."""
  import json
  import os
  import time
  from distill_jax import runner
  runner.train_phase(run, phase, student, params, run.config.student, run.config.distill.terms,
                     (teacher, tparams))
  end = time.time()
  with open(os.path.join(run.workdir, "metrics.jsonl")) as f:
    records = [r for r in map(json.loads, f) if r["phase"] == phase and r["split"] == "train"]
  return (run.config.student.steps - records[0]["step"]) / (end - records[0]["time"])
