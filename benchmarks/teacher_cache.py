r"""Epoch time with the online teacher vs with the teacher-output cache, in one run.

  python benchmarks/teacher_cache.py

The benchmark pair (teacher 784-1200-1200-10, student 784-800-800-10, batch 256) on
MNIST-sized synthetic data (60,000 x 784), one epoch through the runner (``runner.train_phase``:
input pipeline, logging every 10 steps, asynchronous checkpoints every 200 steps), timed from
the first logged step (after compilation), the two modes alternated. Building the cache (hashing
the teacher and data, one teacher pass) is timed separately: it is paid once per teacher/data.
"""
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import common  # noqa: E402
from distill_jax import losses, runner  # noqa: E402


def main(num_examples: int = 60_000, rounds: int = 3):
  _, state, tparams, teacher, student = common.jax_kd_step()
  rates = {"online": [], "cached": []}
  with tempfile.TemporaryDirectory() as workdir:
    run = common.epoch_run(os.path.join(workdir, "build"), num_examples, **{"distill.cache": "full"})
    start = time.perf_counter()
    runner.cached_outputs(run, losses.bind(common.HINTON, "terms"), teacher, tparams,
                          run.config.student)
    build = time.perf_counter() - start
    for r in range(rounds):
      for mode, cache in (("online", ""), ("cached", "full")):
        run = common.epoch_run(os.path.join(workdir, f"{mode}{r}"), num_examples,
                               **{"distill.cache": cache})
        rates[mode].append(common.epoch_steps_per_second(run, "student", student, state.params,
                                                         tparams, teacher))
  steps = num_examples // common.BATCH
  print(f"machine: {os.cpu_count()} CPU threads, jax {jax.__version__}; {steps} steps of batch "
        f"{common.BATCH} per epoch")
  print(f"cache build (hash teacher + data, one teacher pass over {num_examples}): {build:.1f} s")
  for mode, r in rates.items():
    print(f"{mode} teacher epochs: " + ", ".join(f"{steps / x:.2f}" for x in r) + " s")
  print(f"cached / online epoch speedup (medians): "
        f"{np.median(rates['cached']) / np.median(rates['online']):.2f}x")


if __name__ == "__main__":
  main()
