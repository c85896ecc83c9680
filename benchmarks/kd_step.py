r"""KD step throughput: distill_jax (XLA) vs the same step in PyTorch eager, on the same CPU.

  python benchmarks/kd_step.py        (needs torch: pip install -r requirements-bench.txt)

Teacher 784-1200-1200-10, student 784-800-800-10, batch 256, float32, Adam, T=4, alpha=0.9,
all measured in one process on the same threads. Also: the step's achieved FLOP/s against
this machine's measured dense matmul FLOP/s (the practical ceiling), and epochs through the
runner (``runner.train_phase``: input from host memory, step, metric logging every 10 steps,
asynchronous Orbax checkpoints every 200 steps and at the end; timed from the first logged
step, after compilation) against the bare step run right after each epoch (this VM's speed
drifts by +-15% over seconds, so every ratio compares neighbours in time).

What bounds the ratios is printed too: the FLOPs XLA executes beside the model FLOPs (the
MFU convention), PyTorch's fraction of the ceiling (so the speedup a step at the ceiling would
reach), each of the step's matmuls timed alone, and what one checkpoint save costs.
"""
import os
import sys
import tempfile
import time
from typing import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import common  # noqa: E402
from distill_jax.checkpoint import Checkpointer  # noqa: E402


def jax_step() -> tuple[Callable[[], None], float]:
  """One blocking distill_jax KD step (compiled on first call), and the FLOPs it executes."""
  step, state, tparams, *_ = common.jax_kd_step()
  batch = jax.device_put(common.synthetic_batch())
  holder = {"state": state}

  def run():
    holder["state"], metrics = step(holder["state"], batch, tparams)
    metrics["loss"].block_until_ready()
  return run, common.executed_flops(step, state, batch, tparams)


def epoch_vs_step(run_step: Callable[[], None], rounds: int = 3) -> tuple[list, list, int, float]:
  """Alternate one epoch through ``runner.train_phase`` (MNIST-sized synthetic data from host
  memory, logging every 10 steps, async checkpoints every 200 steps and at the end, which the
  epoch waits for) with an equally long window of the bare step; returns both rates per
  round, the epoch's steps and what one checkpoint save costs."""
  _, state, tparams, teacher, student = common.jax_kd_step()
  loop_rates, step_rates = [], []
  with tempfile.TemporaryDirectory() as workdir:
    for r in range(rounds):
      run = common.epoch_run(os.path.join(workdir, f"epoch{r}"))
      start = time.perf_counter()
      loop_rates.append(common.epoch_steps_per_second(run, "student", student, state.params,
                                                      tparams, teacher))
      elapsed = time.perf_counter() - start
      step_rates.append(common.steps_per_second(run_step, seconds=elapsed / 2, warmup=1))
    # What one of the loop's saves costs (the student state: params and Adam moments).
    ckpt, saves = Checkpointer(os.path.join(workdir, "saves")), []
    for i in range(6):
      start = time.perf_counter()
      ckpt.save(state.replace(step=state.step + i), {})
      ckpt.wait()
      saves.append(time.perf_counter() - start)
    ckpt.close()
  return loop_rates, step_rates, run.config.student.steps, float(np.median(saves[1:]))


def matmul_anatomy(ceiling: float, step_rate: float) -> list[str]:
  """Lines that time each matmul of the step alone, against the ceiling and the step time."""
  lines, total = [], 0.0
  for name, f, lhs, rhs, flops in common.step_matmuls():
    t = common.matmul_seconds(f, lhs, rhs)
    total += t
    lines.append(f"  {name}: {t * 1e3:.2f} ms, {flops / t / ceiling:.2f} of the ceiling")
  lines.append(f"  sum of the step's matmuls timed alone: {total * 1e3:.1f} ms of the "
               f"{1e3 / step_rate:.1f} ms step (the rest: Adam, activations, softmax, dispatch)")
  return lines


def torch_step(threads: int) -> Callable[[], None]:
  """One PyTorch eager KD step, same pair, batch, loss and Adam, ``threads`` intra-op threads."""
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
  return run


def main(rounds: int = 5):
  threads = os.cpu_count()
  print(f"machine: {threads} CPU threads, {jax.devices()[0].device_kind}, jax {jax.__version__}")
  run_jax, executed = jax_step()
  try:
    run_torch = torch_step(threads)
  except ImportError:
    sys.exit("torch is not installed: pip install -r requirements-bench.txt")
  # Interleaved rounds: this VM's speed drifts, so each ratio compares neighbours in time.
  jax_rates, torch_rates, ceilings = [], [], []
  for _ in range(rounds):
    ceilings.append(common.matmul_flops_per_second(seconds=1.0))
    jax_rates.append(common.steps_per_second(run_jax, seconds=2.0))
    time.sleep(0.5)   # let torch's OpenMP threads (which spin after work) and XLA's settle
    torch_rates.append(common.steps_per_second(run_torch, seconds=2.0))
    time.sleep(0.5)
  loop_rates, step_rates, epoch_steps, save = epoch_vs_step(run_jax)
  anatomy = matmul_anatomy(float(np.median(ceilings)), float(np.median(jax_rates)))
  loop_ratio = float(np.median(np.array(loop_rates) / np.array(step_rates)))
  jax_rate, torch_rate = float(np.median(jax_rates)), float(np.median(torch_rates))
  ratio = float(np.median(np.array(jax_rates) / np.array(torch_rates)))
  flops = common.kd_step_flops()
  of_ceiling = lambda rates, f: float(np.median(np.array(rates) * f / np.array(ceilings)))
  fraction = of_ceiling(jax_rates, flops)
  # What bounds the speedup on this machine: a step that executed its FLOPs at the matmul
  # ceiling would be 1 / (PyTorch's fraction of the ceiling, by the same FLOPs) times faster.
  torch_executed = of_ceiling(torch_rates, executed)
  print(f"matmul ceiling (2048^2 float32, XLA), {rounds} rounds: "
        + ", ".join(f"{c / 1e9:.1f}" for c in ceilings) + " GFLOP/s")
  print(f"KD step FLOPs: {flops / 1e9:.3f} GFLOP model (teacher forward + student forward, "
        f"backward = 2x forward), {executed / 1e9:.3f} GFLOP executed (XLA cost analysis)")
  print(f"distill_jax step, {rounds} rounds: " + ", ".join(f"{r:.1f}" for r in jax_rates)
        + f" steps/s; median {jax_rate:.1f} = {jax_rate * flops / 1e9:.1f} GFLOP/s")
  print(f"pytorch eager step, {rounds} rounds: " + ", ".join(f"{r:.1f}" for r in torch_rates)
        + f" steps/s; median {torch_rate:.1f}")
  print(f"distill_jax epoch ({epoch_steps} steps through runner.train_phase, from the first "
        "logged step), 3 rounds: "
        + ", ".join(f"{r:.1f}" for r in loop_rates) + " steps/s; bare step right after each: "
        + ", ".join(f"{r:.1f}" for r in step_rates) + " steps/s")
  print(f"one asynchronous checkpoint of the student state, save + wait: {save * 1e3:.0f} ms")
  print("the step's matmuls, each timed alone:")
  print("\n".join(anatomy))
  print(f"speedup vs pytorch eager (median of per-round ratios): {ratio:.2f}x")
  print(f"by executed FLOPs: distill_jax {of_ceiling(jax_rates, executed):.2f}, pytorch eager "
        f"{torch_executed:.2f} of the matmul ceiling; a step at the ceiling would be "
        f"{1 / torch_executed:.2f}x pytorch (1.3x needs {1.3 * torch_executed:.2f} of it)")
  print(f"fraction of matmul ceiling (model FLOPs, median of per-round ratios): {fraction:.2f}")
  print(f"epoch / step-only throughput (median of per-round ratios): {loop_ratio:.2f}")


if __name__ == "__main__":
  main()
