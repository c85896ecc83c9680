r"""Epoch time with the online teacher vs with the teacher-output cache, in one run.

  python benchmarks/teacher_cache.py

The benchmark pair (teacher 784-1200-1200-10, student 784-800-800-10, batch 256) on
MNIST-sized synthetic data (60,000 x 784), one epoch through the real loop (``loop.fit``:
input pipeline, logging every 10 steps, asynchronous checkpoints every 200 steps), both
steps compiled beforehand and the two modes alternated twice. Building the cache (hashing the
teacher and data, one teacher pass) is timed separately: it is paid once per teacher/data.
"""
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import common  # noqa: E402
from distill_jax import data as data_lib, sharding, teacher_cache, train  # noqa: E402
from distill_jax.checkpoint import Checkpointer  # noqa: E402
from distill_jax.loop import fit  # noqa: E402


def main(num_examples: int = 60_000, rounds: int = 2):
  ds, steps, mesh, state, tparams, teacher = common.epoch_setup(num_examples)
  student = common.mlp(common.STUDENT)
  shardings = sharding.tree_shardings(state, sharding.REPLICATED, mesh)
  predict = lambda x: train.predict(teacher.apply, tparams, x, mesh, 1024)
  with tempfile.TemporaryDirectory() as workdir:
    start = time.perf_counter()
    key = teacher_cache.cache_key(tparams, ds, {}, "logits", 0)
    cache = teacher_cache.load_or_build(workdir, key,
                                        lambda: teacher_cache.compute(predict, ds.x_train,
                                                                      "logits", 0))
    build = time.perf_counter() - start
    modes = {
        "online": (train.make_train_step(student.apply, teacher.apply, temperature=4.0,
                                         alpha=0.9), lambda idx: {}),
        "cached": (train.make_train_step(student.apply, None, temperature=4.0, alpha=0.9),
                   lambda idx: {"teacher_logits": cache["teacher_logits"][idx]}),
    }
    times = {m: [] for m in modes}
    for r in range(rounds + 1):               # round 0 compiles and warms up
      for mode, (step, extra) in modes.items():
        jitted = train.jit_train_step(step, mesh, shardings)
        idx_of = lambda i: data_lib.local_indices(num_examples, common.BATCH, 0, i)

        def batch_fn(i, extra=extra):
          idx = idx_of(i)
          return {"x": ds.x_train[idx], "y": ds.y_train[idx], **extra(idx)}
        n = steps if r else 3
        ckpt = Checkpointer(os.path.join(workdir, f"{mode}{r}"))
        t = time.perf_counter()
        fit(phase=mode, state=state, step_fn=jitted, batch_fn=batch_fn, num_steps=n, mesh=mesh,
            state_shardings=shardings, checkpointer=ckpt, batch_size=common.BATCH,
            teacher_params=tparams, log_every=10, checkpoint_every=200)
        if r:
          times[mode].append(time.perf_counter() - t)
        ckpt.close()
  online, cached = float(np.median(times["online"])), float(np.median(times["cached"]))
  print(f"machine: {os.cpu_count()} CPU threads, jax {jax.__version__}; {steps} steps of batch "
        f"{common.BATCH} per epoch")
  print(f"cache build (hash teacher + data, one teacher pass over {num_examples}): {build:.1f} s")
  print("online teacher epochs: " + ", ".join(f"{t:.2f}" for t in times["online"]) + " s")
  print("cached teacher epochs: " + ", ".join(f"{t:.2f}" for t in times["cached"]) + " s")
  print(f"cached / online epoch speedup (medians): {online / cached:.2f}x")


if __name__ == "__main__":
  main()
