r"""Model stitching (Bansal et al. 2021): model A's stem and first ``cut`` layers, a linear
stitch, then model B's layers from ``cut`` on and its head (B may be of another width). The stitch starts from least
squares on training activations, then trains alone (everything else frozen); the stitching
penalty is B's held-out score minus the stitched model's.

  python -m distill_jax.blockwise.model_stitching --config=configs/digits_stitch.py \
      --workdir=runs/stitch --config.stitch.a=RUN_A/teacher/export \
      --config.stitch.b=RUN_B/teacher/export
"""
import os
import time
from typing import Optional

import ml_collections

from distill_jax import cli, models, runner
from distill_jax.blockwise import layout
from distill_jax.blockwise.stitch import stitch_models
from distill_jax.checks import Checked, check
from distill_jax.errors import InputError
from distill_jax.files import write_json
from distill_jax.paths import fingerprint


def stitching(config, workdir: str, checked: Optional[Checked] = None) -> dict:
  """Every cut of ``stitch.cuts``: the stitched model's score after least squares and after
  training the stitch, and the penalty against B; returns (and writes) the summary."""
  start = time.time()
  s = config.stitch
  if not (s.a and s.b and s.cuts):
    raise InputError("stitch.a and stitch.b (two exports of one architecture) and stitch.cuts "
                     "are required")
  checked = checked or check(config)
  run = runner.start(config, workdir, checked.data)
  info, metric = dict(run.data.info), run.task.metric
  a = runner.load_model(run.task, s.a, run.data, "stitch.a")
  b = runner.load_model(run.task, s.b, run.data, "stitch.b")
  ta, tb = (layout.teacher_stack(m, p, info, fingerprint(p)) for m, p in (a, b))
  score = lambda model, params: float(run.task.evaluate(model, params, run.data, run.mesh,
                                                        config)[metric])
  sample = run.data.rows(slice(0, config.student.init.num_examples))
  summary = {"metric": metric, "a": score(*a), "b": score(*b), "cuts": {}}
  for cut in s.cuts:
    _, params = stitch_models(ta, tb, cut, sample)
    model = models.build({"name": f"{ta.family}_stitched", "base": ta.base,
                          "blocks": ["keep", "keep"],
                          "groups": [list(range(cut)), list(range(cut, tb.depth))],
                          "stitch": [True, False],
                          **({"bases": [ta.base, tb.base]} if ta.base != tb.base else {})},
                         info)
    least_squares = score(model, params)
    recipe = ml_collections.ConfigDict(dict(steps=s.steps, learning_rate=s.learning_rate,
                                            mixup=0.0, frozen=(r"(?!stitch_).*",)))
    trained = runner.train_phase(run, f"stitch_{cut}", model, params, recipe, list(s.terms))
    after = score(model, trained)
    summary["cuts"][str(cut)] = {"least_squares": least_squares, "trained": after,
                                 "penalty": summary["b"] - after}
    print(f"cut {cut}: A {summary['a']:.4f}, B {summary['b']:.4f}; stitched: least squares "
          f"{least_squares:.4f}, trained stitch {after:.4f} (penalty {summary['b'] - after:+.4f})")
  summary["wall_seconds"] = time.time() - start
  write_json(os.path.join(workdir, "summary.json"), summary)
  return summary


if __name__ == "__main__":
  cli.run(stitching, "Directory for the stitches' checkpoints and the summary.", check=check)
