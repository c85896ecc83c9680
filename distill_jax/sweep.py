r"""Several variants of one config over several seeds, summarised as mean and spread.

  python -m distill_jax.sweep --config=configs/mnist1d.py --variant=mlp --variant=mlp,hint \
      --seeds=0,1,2 --workdir=runs/mnist1d

Each ``--variant`` is the config's argument (``configs/mnist1d.py:mlp,hint``). Per seed the
teacher is trained once, by the first variant, and restored from its checkpoint by the others;
the from-scratch baseline of a student recipe is trained once per seed too. Each run lives in
``WORKDIR/<variant>/seed_<s>/`` (a finished one is read back, an interrupted one resumes), and
the table goes to ``WORKDIR/table.json`` and the console: mean, sample standard deviation and
[min, max] of test accuracy over the seeds.
"""
import json
import os
import time

import numpy as np
from absl import app, flags
from absl import logging as absl_logging

from distill_jax import config_files, pipeline

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Flags are defined only when run as a program, so that importing this module next to
  another CLI module does not define ``--workdir`` twice."""
  flags.DEFINE_string("config", None, "Path to a configs/*.py file (no ':arg').")
  flags.DEFINE_multi_string("variant", [""], "The config's argument; repeat for several.")
  flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds (config.seed) to run every variant with.")
  flags.DEFINE_string("workdir", None, "Directory for every run and the table.")


def _recipe_key(config) -> str:
  """Two variants with the same key train the same from-scratch baseline."""
  s = config.student
  return json.dumps([s.model.to_dict(), s.steps, s.learning_rate, s.get("mixup", 0.0),
                     config.batch_size], sort_keys=True, default=str)


def sweep(config_path: str, variants: list[str], seeds: list[int], workdir: str) -> dict:
  """Run every (variant, seed); returns ``{row: [accuracy per seed]}`` plus run metadata."""
  rows: dict[str, list[float]] = {}
  for seed in seeds:
    teacher_checkpoint, baselines = "", set()
    for variant in variants:
      config = config_files.load(config_path, variant or None)
      key = _recipe_key(config)
      with config.unlocked():
        config.seed = seed
        config.baseline = key not in baselines
        if teacher_checkpoint:
          config.teacher.checkpoint = teacher_checkpoint
      run_dir = os.path.join(workdir, variant or "default", f"seed_{seed}")
      summary_path = os.path.join(run_dir, "summary.json")
      if os.path.exists(summary_path):
        with open(summary_path) as f:
          summary = json.load(f)
      else:
        start = time.time()
        summary = pipeline.run(config, run_dir, pipeline.validate(config))
        print(f"[sweep] {variant} seed {seed}: {time.time() - start:.0f} s")
      if not teacher_checkpoint:
        teacher_checkpoint = config.teacher.checkpoint or os.path.join(run_dir, "teacher",
                                                                       "checkpoints")
        rows.setdefault("teacher", []).append(summary["teacher"]["accuracy"])
      student = config.student.model.name
      if "baseline" in summary and key not in baselines:
        baselines.add(key)
        rows.setdefault(f"{student} from scratch", []).append(summary["baseline"]["accuracy"])
      rows.setdefault(f"{variant or 'default'} distilled", []).append(
          summary["student"]["accuracy"])
  return rows


def format_table(rows: dict) -> str:
  lines = [f"{'row':<34} {'mean':>7} {'std':>6} {'min':>7} {'max':>7}  n"]
  for name, values in rows.items():
    v = np.asarray(values)
    std = v.std(ddof=1) if len(v) > 1 else 0.0
    lines.append(f"{name:<34} {v.mean():7.4f} {std:6.4f} {v.min():7.4f} {v.max():7.4f}  {len(v)}")
  return "\n".join(lines)


def main(argv):
  del argv
  absl_logging.set_verbosity(absl_logging.WARNING)   # Orbax logs every save at INFO
  if not FLAGS.config or not FLAGS.workdir:
    raise app.UsageError("--config and --workdir are required")
  start = time.time()
  rows = sweep(FLAGS.config, list(FLAGS.variant), [int(s) for s in FLAGS.seeds], FLAGS.workdir)
  os.makedirs(FLAGS.workdir, exist_ok=True)
  with open(os.path.join(FLAGS.workdir, "table.json"), "w") as f:
    json.dump(rows, f, indent=2)
  print(format_table(rows))
  print(f"sweep wall time {time.time() - start:.0f} s")


if __name__ == "__main__":
  define_flags()
  app.run(main)
