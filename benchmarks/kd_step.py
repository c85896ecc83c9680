r"""KD step throughput: distill_jax (XLA) vs the same step in PyTorch eager, on the same CPU.

  python benchmarks/kd_step.py        (needs torch: pip install -r requirements-bench.txt)

Teacher 784-1200-1200-10, student 784-800-800-10, batch 256, float32, Adam, T=4, alpha=0.9,
all measured in one process on the same threads. Also: the step's achieved FLOP/s against
this machine's measured dense matmul FLOP/s (the practical ceiling), and one epoch of the
full training loop (input pipeline from host memory, step, metric logging every 10 steps,
asynchronous Orbax checkpoints every 100 steps) against the step alone.
"""
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import common  # noqa: E402
from distill_jax import data as data_lib, sharding  # noqa: E402
from distill_jax.checkpoint import Checkpointer  # noqa: E402
from distill_jax.data.dataset import Dataset  # noqa: E402
from distill_jax.loop import MetricsWriter, fit  # noqa: E402


def jax_step_rate() -> float:
  step, state, tparams, _ = common.jax_kd_step()
  batch = jax.device_put(common.synthetic_batch())
  holder = {"state": state}

  def run():
    holder["state"], metrics = step(holder["state"], batch, tparams)
    metrics["loss"].block_until_ready()
  return common.steps_per_second(run)


def jax_epoch_rate(num_examples: int = 60_000) -> tuple[float, int]:
  """Steps/s of one epoch through ``loop.fit`` on MNIST-sized synthetic data."""
  rng = np.random.default_rng(0)
  ds = Dataset("synthetic", rng.normal(size=(num_examples, common.INPUT)).astype(np.float32),
               rng.integers(0, 10, num_examples).astype(np.int32),
               np.zeros((1, common.INPUT), np.float32), np.zeros(1, np.int32), 10)
  steps = data_lib.steps_per_epoch(num_examples, common.BATCH)
  mesh = sharding.make_mesh()
  _, state, tparams, teacher = common.jax_kd_step()
  from distill_jax import train
  student = common.mlp(common.STUDENT)
  step = train.make_train_step(student.apply, teacher.apply, temperature=4.0, alpha=0.9)
  shardings = sharding.tree_shardings(state, sharding.REPLICATED, mesh)
  jitted = train.jit_train_step(step, mesh, shardings)
  with tempfile.TemporaryDirectory() as workdir:
    # compile outside the timed epoch
    warm = Checkpointer(os.path.join(workdir, "warm"))
    fit(phase="warmup", state=state, step_fn=jitted, batch_size=common.BATCH, num_steps=3,
        batch_fn=lambda i: data_lib.train_batch(ds, common.BATCH, 0, i), mesh=mesh,
        state_shardings=shardings, checkpointer=warm, teacher_params=tparams, log_every=10,
        checkpoint_every=1000)
    warm.close()
    ckpt = Checkpointer(os.path.join(workdir, "epoch"))
    start = time.perf_counter()
    fit(phase="epoch", state=state, step_fn=jitted, batch_size=common.BATCH, num_steps=steps,
        batch_fn=lambda i: data_lib.train_batch(ds, common.BATCH, 0, i), mesh=mesh,
        state_shardings=shardings, checkpointer=ckpt, teacher_params=tparams,
        writer=MetricsWriter(os.path.join(workdir, "metrics.jsonl")), log_every=10,
        checkpoint_every=100)
    elapsed = time.perf_counter() - start
    ckpt.close()
  return steps / elapsed, steps


def torch_step_rate(threads: int) -> float:
  import torch
  import torch.nn.functional as F
  torch.set_num_threads(threads)

  def mlp(hidden):
    dims = (common.INPUT,) + hidden + (common.CLASSES,)
    layers = []
    for i, (a, b) in enumerate(zip(dims, dims[1:])):
      layers.append(torch.nn.Linear(a, b))
      if i < len(dims) - 2:
        layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)

  torch.manual_seed(0)
  teacher, student = mlp(common.TEACHER).eval(), mlp(common.STUDENT)
  opt = torch.optim.Adam(student.parameters(), lr=1e-3)
  batch = common.synthetic_batch()
  x, y = torch.from_numpy(batch["x"]), torch.from_numpy(batch["y"]).long()
  t, alpha = 4.0, 0.9

  def run():
    with torch.no_grad():
      teacher_logits = teacher(x)
    logits = student(x)
    soft = F.kl_div(F.log_softmax(logits / t, -1), F.log_softmax(teacher_logits / t, -1),
                    reduction="batchmean", log_target=True)
    loss = alpha * t * t * soft + (1 - alpha) * F.cross_entropy(logits, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    loss.item()
  return common.steps_per_second(run)


def main():
  threads = os.cpu_count()
  print(f"machine: {threads} CPU threads, {jax.devices()[0].device_kind}, jax {jax.__version__}")
  ceiling = common.matmul_flops_per_second()
  jax_rate = jax_step_rate()
  epoch_rate, epoch_steps = jax_epoch_rate()
  try:
    torch_rate = torch_step_rate(threads)
  except ImportError:
    torch_rate = float("nan")
    print("torch is not installed: pip install -r requirements-bench.txt")
  flops = common.kd_step_flops()
  print(f"matmul ceiling (2048^2 float32, XLA): {ceiling / 1e9:.1f} GFLOP/s")
  print(f"KD step FLOPs: {flops / 1e9:.3f} GFLOP (teacher forward + student forward/backward)")
  print(f"distill_jax step: {jax_rate:.1f} steps/s = {jax_rate * flops / 1e9:.1f} GFLOP/s")
  print(f"pytorch eager step: {torch_rate:.1f} steps/s")
  print(f"distill_jax epoch ({epoch_steps} steps, input + logging + async checkpoints): "
        f"{epoch_rate:.1f} steps/s")
  print(f"speedup vs pytorch eager: {jax_rate / torch_rate:.2f}x")
  print(f"fraction of matmul ceiling: {jax_rate * flops / ceiling:.2f}")
  print(f"epoch / step-only throughput: {epoch_rate / jax_rate:.2f}")


if __name__ == "__main__":
  main()
