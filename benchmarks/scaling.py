r"""KD step time on 1, 2, 4, 8 devices (data parallel), and model FLOP utilisation.

  python benchmarks/scaling.py                      # CPU: 8 fake devices on this machine
  python benchmarks/scaling.py --peak_tflops=989    # on a GPU/TPU: MFU against that peak

On CPU the "devices" are XLA host devices sharing the same cores, so this measures the
overhead of partitioning the step (ideal: constant time per global batch), not speed-up. On an
accelerator each device gets its own share of the global batch (256 per device) and the
script reports model FLOP utilisation = achieved FLOP/s / (devices x peak).
"""
import argparse
import os
import sys

if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_force_host_platform_device_count=8")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

from benchmarks import common  # noqa: E402
from distill_jax import losses, sharding, train  # noqa: E402


def step_rate(devices: list, per_device_batch: int) -> float:
  _, state, tparams, teacher, student = common.jax_kd_step()
  mesh = sharding.make_mesh({"data": len(devices)}, devices)
  shardings = sharding.tree_shardings(state, sharding.REPLICATED, mesh)
  step = train.make_train_step(student, losses.bind(common.HINTON, "terms"), teacher)
  jitted = train.jit_train_step(step, mesh, shardings)
  holder = {"state": sharding.place(state, shardings, copy=True)}
  tp = sharding.place(tparams, sharding.replicated(mesh))
  batch = sharding.shard_batch(common.synthetic_batch(batch=per_device_batch * len(devices)), mesh)

  def run():   # waits on every step: queued multi-device CPU steps can deadlock (docs/pitfalls.md)
    holder["state"], metrics = jitted(holder["state"], batch, tp)
    metrics["loss"].block_until_ready()
  return common.steps_per_second(run, seconds=3.0)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--peak_tflops", type=float, default=0.0,
                      help="per-device peak of the accelerator (dense, the step's dtype)")
  args = parser.parse_args()
  platform = jax.devices()[0].platform
  counts = [n for n in (1, 2, 4, 8) if n <= jax.device_count()]
  on_cpu = platform == "cpu"
  rows = []
  for n in counts:
    per_device = common.BATCH // n if on_cpu else common.BATCH   # CPU: fixed global batch
    rate = step_rate(jax.devices()[:n], per_device)
    flops = common.kd_step_flops(batch=per_device * n)
    rows.append((n, per_device * n, 1000 / rate, rate * flops))
  print(f"machine: {jax.devices()[0].device_kind} ({platform}), {os.cpu_count()} CPU threads")
  base = rows[0][2]
  for n, global_batch, ms, fps in rows:
    line = (f"devices {n}: global batch {global_batch}, {ms:.2f} ms/step, "
            f"{fps / 1e9:.1f} GFLOP/s, time vs 1 device {ms / base:.2f}x")
    if args.peak_tflops and not on_cpu:
      line += f", MFU {fps / (n * args.peak_tflops * 1e12):.3f}"
    print(line)


if __name__ == "__main__":
  main()
