r"""Seeds x variants: the main job once per (variant, seed), and a table of mean +- spread.

  python -m distill_jax.sweep --config=configs/mnist1d.py --workdir=runs/mnist1d

Per seed the teacher trains once (the first variant; the others load its export), and each
student recipe's baseline once; runs are reused while their key holds.
"""
import os
import time
from typing import Optional

import numpy as np

from distill_jax import cli, plans, plots
from distill_jax.checks import Checked, check
from distill_jax.config import apply_overrides
from distill_jax.errors import InputError
from distill_jax.files import write_json
from distill_jax.main import run_job


def sweep(config, workdir: str, checked: Optional[Checked] = None) -> dict:
  """Run every (variant, seed); returns ``{row: [metric per seed]}``."""
  start = time.time()
  metric = None
  rows: dict[str, list[float]] = {}
  columns: dict[str, dict[str, list[float]]] = {}     # row -> sweep.columns -> per seed
  variants = [v for v in config.sweep.variants
              if not config.sweep.names or v["name"] in config.sweep.names]
  unknown = set(config.sweep.names) - {v["name"] for v in variants}
  if unknown:
    raise InputError(f"sweep.names: no variant named {sorted(unknown)}; variants are "
                     f"{[v['name'] for v in config.sweep.variants]}")
  variants = variants or [{"name": "default"}]
  for seed in config.sweep.seeds:
    teachers, baselines = {}, set()
    for variant in variants:
      c = apply_overrides(config, plans.plan_overrides(variant, "sweep.variants"))
      teacher_key = plans.key_of(c.teacher, c.data, seed)
      recipe = plans.key_of(c.student.model, c.student.steps, c.student.learning_rate,
                            c.student.weight_decay, c.student.mixup, c.batch_size, seed)
      with c.unlocked():
        c.seed = seed
        c.baseline.enabled = recipe not in baselines
        if teacher_key in teachers:
          c.teacher.load = teachers[teacher_key]
      # The sweep's check covered every variant; one that keeps the data and the teacher
      # reuses what it read (a pretrained teacher is not read again per variant).
      reuse = checked if checked and not any(
          k.startswith(("data.", "teacher.")) for k in variant) else None
      summary = plans.run_plans(
          [{"name": f"seed_{seed}"}],
          lambda p, directory, c=c, reuse=reuse: run_job(c, directory, reuse),
          os.path.join(workdir, variant["name"]), lambda p, c=c: plans.key_of(c), what="sweep")[0]
      teachers.setdefault(teacher_key, c.teacher.load or os.path.join(
          workdir, variant["name"], f"seed_{seed}", "teacher", "export"))
      metric = summary["metric"]

      def add(name: str, result: dict) -> None:
        rows.setdefault(name, []).append(result[metric])
        for col in config.sweep.columns:
          if isinstance(result.get(col), (int, float)):
            columns.setdefault(name, {}).setdefault(col, []).append(result[col])
      if not c.teacher.load or (config.sweep.columns and variant is variants[0]):
        add("teacher", summary["teacher"])
      if "baseline" in summary:
        baselines.add(recipe)
        # named by the variant that trained it: two recipes may share a model name
        add(f"{variant['name']} baseline "
            f"({'labels only' if summary['baseline'].get('from_init') else 'from scratch'})",
            summary["baseline"])
      for plan, result in summary.get("init_compare", {}).items():
        add(f"{variant['name']} at init: {plan}", result)
      add(f"{variant['name']} distilled", summary["student"])
  write_json(os.path.join(workdir, "table.json"), {"metric": metric, "rows": rows,
                                                   "columns": columns})
  print(format_table(rows, metric))
  if config.sweep.columns:
    print(format_columns(columns, config.sweep.columns))
  print(f"sweep wall time {time.time() - start:.0f} s")
  return rows


def format_columns(columns: dict, names) -> str:
  """One row per model, the seeds' mean of each of ``names`` (``sweep.columns``)."""
  cell = lambda v: f"{np.mean(v):.4g}" if v else "-"
  return plots.table([("row", *names)] + [(row, *(cell(cols.get(n, [])) for n in names))
                                          for row, cols in columns.items()])


def format_table(rows: dict, metric: str) -> str:
  """Mean, sample standard deviation, min and max of each row's values over the seeds."""
  stats = lambda v: (v.mean(), v.std(ddof=1) if len(v) > 1 else 0.0, v.min(), v.max())
  return plots.table([(f"row ({metric})", "mean", "std", "min", "max", "n")] + [
      (name, *(f"{x:.4f}" for x in stats(np.asarray(v))), str(len(v))) for name, v in rows.items()])


if __name__ == "__main__":
  cli.run(sweep, "Directory for every run and the table.", check=check)
