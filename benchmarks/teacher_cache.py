r"""Epoch time with the online teacher vs with the teacher-output cache, in one run.

  python benchmarks/teacher_cache.py

The benchmark pair (teacher 784-1200-1200-10, student 784-800-800-10, batch 256) on
MNIST-sized synthetic data (60,000 x 784), through ``pipeline.train_model`` (the real loop:
input pipeline, logging, asynchronous checkpoints). The cache is built once (its time is
printed separately) and then every epoch skips the teacher's forward pass.
"""
import importlib.util
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import common  # noqa: E402
from distill_jax import pipeline, sharding, train  # noqa: E402
from distill_jax.data.dataset import Dataset  # noqa: E402


def config(cache: str, steps: int):
  spec = importlib.util.spec_from_file_location("cfg", f"{ROOT}/configs/digits_mlp10_to3.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config()
  c.batch_size, c.log_every, c.checkpoint_every = common.BATCH, 10, 100
  c.student.steps, c.student.mixup, c.student.model.dropout = steps, 0.0, 0.0
  c.distill.cache = cache
  return c


def epoch_seconds(cache: str, ds: Dataset, workdir: str, steps: int, tparams) -> float:
  teacher, student = common.mlp(common.TEACHER), common.mlp(common.STUDENT)
  fresh = train.init_params(student, (common.INPUT,), jax.random.PRNGKey(1))
  c = config(cache, steps)
  mesh = sharding.make_mesh()
  start = time.perf_counter()
  pipeline.train_model("student", student, fresh, c.student, c, ds, mesh, workdir,
                       teacher=(teacher, tparams))
  return time.perf_counter() - start


def main(num_examples: int = 60_000):
  rng = np.random.default_rng(0)
  ds = Dataset("synthetic", rng.normal(size=(num_examples, common.INPUT)).astype(np.float32),
               rng.integers(0, 10, num_examples).astype(np.int32),
               np.zeros((1, common.INPUT), np.float32), np.zeros(1, np.int32), 10)
  steps = num_examples // common.BATCH
  tparams = train.init_params(common.mlp(common.TEACHER), (common.INPUT,), jax.random.PRNGKey(0))
  with tempfile.TemporaryDirectory() as tmp:
    # the first call of each mode compiles; time a second, identical epoch in a fresh workdir
    epoch_seconds("", ds, f"{tmp}/online_warm", 3, tparams)
    online = epoch_seconds("", ds, f"{tmp}/online", steps, tparams)
    build_start = time.perf_counter()
    epoch_seconds("logits", ds, f"{tmp}/cached", 3, tparams)   # builds the cache, compiles
    build = time.perf_counter() - build_start
    os.makedirs(f"{tmp}/cached2", exist_ok=True)
    os.rename(f"{tmp}/cached/teacher_cache", f"{tmp}/cached2/teacher_cache")
    cached = epoch_seconds("logits", ds, f"{tmp}/cached2", steps, tparams)
  print(f"machine: {os.cpu_count()} CPU threads, jax {jax.__version__}; {steps} steps of batch "
        f"{common.BATCH} per epoch")
  print(f"cache build (one teacher pass over {num_examples} examples + 3 steps): {build:.1f} s")
  print(f"online teacher epoch: {online:.1f} s")
  print(f"cached teacher epoch: {cached:.1f} s")
  print(f"cached / online epoch speedup: {online / cached:.2f}x")


if __name__ == "__main__":
  main()
