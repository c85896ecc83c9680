r"""Print a run's summary from its files (an interrupted run: its phases' last figures).

  python -m distill_jax.report --workdir=DIR          (or --compare=DIR1,DIR2,...)
"""
import json
import os

from absl import flags

from distill_jax import cli
from distill_jax.errors import InputError, MissingInput
from distill_jax.main import format_summary
from distill_jax.plots import read_metrics

flags.DEFINE_string("workdir", None, "A run's workdir.")
flags.DEFINE_list("compare", [], "Several workdirs, one after the other.")
FLAGS = flags.FLAGS


def run_report(workdir: str) -> str:
  if not os.path.isdir(workdir):
    raise MissingInput(f"workdir {workdir!r} does not exist")
  path = os.path.join(workdir, "summary.json")
  if os.path.exists(path):
    try:
      with open(path) as f:
        return format_summary(json.load(f))
    except ValueError:
      raise InputError(f"{path} is not valid JSON") from None
  series = read_metrics(os.path.join(workdir, "metrics.jsonl"))
  if not series:
    raise MissingInput(f"{workdir!r} holds neither summary.json nor metrics.jsonl")
  lines = ["interrupted run (no summary.json yet): each phase's last figures"]
  for phase in dict.fromkeys(p for p, _ in series):
    evals, trains = series.get((phase, "eval"), []), series.get((phase, "train"), [])
    step, record = (evals or trains)[-1]
    figures = ", ".join(f"{k} {v:.4f}" for k, v in record.items()
                        if k not in ("step", "time", "examples_per_sec") and isinstance(v, float))
    lines.append(f"  {phase:<10} step {step:>6}  {'held-out' if evals else 'train batch'}: "
                 f"{figures}")
  return "\n".join(lines)


def report() -> None:
  dirs = ([FLAGS.workdir] if FLAGS.workdir else []) + list(FLAGS.compare)
  if not dirs:
    raise InputError("give --workdir=DIR or --compare=DIR1,DIR2,...")
  for d in dirs:
    print(f"== {d}\n{run_report(d)}")


if __name__ == "__main__":
  cli.run(report, config=False)
