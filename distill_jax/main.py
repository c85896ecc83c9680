r"""Train (or restore) a teacher, distil a student, compare with a from-scratch baseline.

  python -m distill_jax.main --config=configs/digits_mlp10_to3.py --workdir=/tmp/digits \
      [--config.batch_size=128 ...]

Each phase (teacher, baseline, student) checkpoints into ``WORKDIR/<phase>/``; rerunning the
same command resumes every phase from its newest checkpoint. Results go to
``WORKDIR/summary.json`` and ``WORKDIR/metrics.jsonl``.
"""
import os
import time

import jax

from distill_jax import cli
from distill_jax.pipeline import run, validate


def main(config, workdir: str, dataset=None) -> dict:
  start = time.time()
  summary = run(config, workdir, dataset)
  print(f"wall time {time.time() - start:.0f} s on {jax.device_count()} "
        f"{jax.devices()[0].platform} device(s); summary in {os.path.join(workdir, 'summary.json')}")
  return summary


if __name__ == "__main__":
  cli.run(main, "Directory for checkpoints, metrics and the summary.", validate=validate)
