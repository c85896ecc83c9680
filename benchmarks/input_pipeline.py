r"""Examples/s that :class:`distill_jax.data.streaming.Stream` delivers from ArrayRecord files,
beside the examples/s the distillation train step consumes on this machine.

  python benchmarks/input_pipeline.py            # full sizes, ~3-4 min on 2 CPU cores
  python benchmarks/input_pipeline.py --smoke    # tiny sizes, one small step, ~1 min

Two workloads. Input: each made in memory (random float32 images) and written to ArrayRecord in
a temporary folder: 32x32x3 with crop+flip+mixup (CIFAR recipe), and 224x224x3 with
inception_crop:224+flip (ImageNet recipe). Each runs with ``num_workers`` 0 (decoding and
augmentation in this process, a 2-thread prefetch) and 2 (grain worker processes): the start-up
time (the first batch: for workers, spawning them and importing what the records need) and the
examples/s over the following batches, read in order as training does.

Step: ``train.make_train_step(student, kd (T=4, weight 0.9) + ce (0.1), teacher)`` with SGD
(lr 0.05, momentum 0.9, weight decay 5e-4, constant schedule), jitted with the state donated,
params from ``model.init``, on a fixed random batch: one compile/warm-up step, then examples/s
over a few steps (blocking on the loss). 32x32: teacher resnet56 -> student resnet20, 100
classes, batch 64; 224x224: resnet34 -> resnet18, 1000 classes, batch 8 (a CPU-sized batch).
Most of the step's time is compiling (XLA on CPU: ~15-40 s a model pair, the eager
``model.init`` included). ``--smoke``: the 32x32 step only, resnet20 -> resnet20, batch 16, two
timed steps (the 224x224 row shows no step). The steps run after all the input rows (no
contention between the two).

Printed: one row per workload and worker count, with the step's examples/s and the ratio
input/step (above 1: the input keeps up with training on this machine), then the step setups
and their compile times.
"""
import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from distill_jax.data import augment  # noqa: E402
from distill_jax.data.streaming import ArrayRecordSource, Stream, write_array_record  # noqa: E402

# name, image side, augmentations, (records, batch, timed batches) in full and --smoke runs,
# then the train step's (teacher preset, student preset, classes, batch, timed steps) in each.
WORKLOADS = (
    ("32x32 crop+flip+mixup", 32, ("crop", "flip", "mixup:0.2"), (1024, 64, 12), (256, 32, 4),
     ("resnet56", "resnet20", 100, 64, 5), ("resnet20", "resnet20", 100, 16, 2)),
    ("224x224 inception+flip", 224, ("inception_crop:224", "flip"), (128, 32, 10), (16, 8, 2),
     ("resnet34", "resnet18", 1000, 8, 3), None),
)
TERMS = (("kd", 0.9, {"temperature": 4.0}), ("ce", 0.1, {}))


def make_records(directory: str, side: int, n: int) -> list[str]:
  rng = np.random.default_rng(0)
  arrays = {"x": rng.random((n, side, side, 3), dtype=np.float32),
            "y": rng.integers(0, 100, n).astype(np.int32)}
  return write_array_record(os.path.join(directory, f"bench{side}"), arrays, num_shards=4)


def measure(paths: list[str], names, batch: int, steps: int, workers: int) -> tuple[float, float]:
  """(seconds to the first batch, examples/s over the next ``steps`` batches)."""
  with Stream(ArrayRecordSource(paths), batch, seed=0, transform=augment.from_config(names),
              num_workers=workers) as stream:
    start = time.perf_counter()
    stream.batch(0)
    startup = time.perf_counter() - start
    start = time.perf_counter()
    for step in range(1, steps + 1):
      stream.batch(step)
    return startup, steps * batch / (time.perf_counter() - start)


def measure_step(side: int, teacher_preset: str, student_preset: str, classes: int, batch: int,
                 steps: int) -> tuple[float, float]:
  """(seconds of the compile/warm-up step, examples/s over the next ``steps`` steps) of the
  distillation train step. JAX is imported here, after the input rows' worker processes."""
  import jax

  from distill_jax import losses, models, train

  info = {"num_classes": classes}
  teacher = models.build({"name": "resnet", "preset": teacher_preset}, info)
  student = models.build({"name": "resnet", "preset": student_preset}, info)
  rng = np.random.default_rng(1)
  data = {"x": jax.numpy.asarray(rng.random((batch, side, side, 3), dtype=np.float32)),
          "y": jax.numpy.asarray(rng.integers(0, classes, batch).astype(np.int32))}
  # Init on one example: the params do not depend on the batch (eager init compiles each op).
  one = {k: v[:1] for k, v in data.items()}
  teacher_params = teacher.init(jax.random.PRNGKey(0), one)
  tx = train.make_optimizer(0.05, 1000, weight_decay=5e-4, optimizer="sgd", momentum=0.9,
                            schedule="constant")
  state = train.TrainState.create(student.init(jax.random.PRNGKey(1), one), tx,
                                  jax.random.PRNGKey(2))
  step = jax.jit(train.make_train_step(student, losses.bind(TERMS, "terms"), teacher),
                 donate_argnums=(0,))
  start = time.perf_counter()
  state, metrics = step(state, data, teacher_params)
  metrics["loss"].block_until_ready()
  compile_s = time.perf_counter() - start
  start = time.perf_counter()
  for _ in range(steps):
    state, metrics = step(state, data, teacher_params)
  metrics["loss"].block_until_ready()
  return compile_s, steps * batch / (time.perf_counter() - start)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--smoke", action="store_true", help="tiny sizes (under ~60 s)")
  parser.add_argument("--workers", default="0,2", help="comma-separated num_workers to run")
  args = parser.parse_args()
  rows, steps_out = [], []
  with tempfile.TemporaryDirectory(prefix="distill_jax_input_") as directory:
    for name, side, names, full, smoke, *step_cfg in WORKLOADS:
      records, batch, steps = smoke if args.smoke else full
      paths = make_records(directory, side, records)
      for workers in (int(w) for w in args.workers.split(",")):
        startup, rate = measure(paths, names, batch, steps, workers)
        rows.append((name, workers, batch, steps * batch, startup, rate))
  for name, side, *_, step_full, step_smoke in WORKLOADS:
    cfg = step_smoke if args.smoke else step_full
    if cfg is not None:
      steps_out.append((name, cfg, *measure_step(side, *cfg)))
  step_rate = {name: rate for name, _, _, rate in steps_out}
  print(f"{'workload':<24} {'workers':>7} {'batch':>5} {'timed':>6} {'start s':>8} "
        f"{'input ex/s':>11} {'step ex/s':>10} {'input/step':>10}")
  for name, workers, batch, timed, startup, rate in rows:
    step = (f"{step_rate[name]:>10.1f} {rate / step_rate[name]:>10.1f}" if name in step_rate
            else f"{'-':>10} {'-':>10}")
    print(f"{name:<24} {workers:>7} {batch:>5} {timed:>6} {startup:>8.2f} {rate:>11.0f} {step}")
  for name, (teacher, student, classes, batch, steps), compile_s, _ in steps_out:
    print(f"step {name}: {teacher} -> {student}, {classes} classes, batch {batch}, "
          f"{steps} timed steps after a {compile_s:.1f} s compile/warm-up step")


if __name__ == "__main__":
  main()
