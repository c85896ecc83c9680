r"""Train (or restore) a teacher, distil a student, compare with a from-scratch baseline.

  python -m distill_jax.main --config=configs/digits_mlp10_to3.py --workdir=/tmp/digits \
      [--config.batch_size=128 ...]

Each phase (teacher, baseline, student) checkpoints into ``WORKDIR/<phase>/``; rerunning the
same command resumes every phase from its newest checkpoint. Results go to
``WORKDIR/summary.json`` and ``WORKDIR/metrics.jsonl``.
"""
import logging
import os
import re
import sys
import time

import jax
from absl import app, flags
from ml_collections import config_flags

from distill_jax.pipeline import run

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Path to a configs/*.py file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and the summary.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  logging.getLogger("absl").setLevel(logging.WARNING)
  start = time.time()
  summary = run(FLAGS.config, FLAGS.workdir)
  print(f"wall time {time.time() - start:.0f} s on {jax.device_count()} "
        f"{jax.devices()[0].platform} device(s); summary in "
        f"{os.path.join(FLAGS.workdir, 'summary.json')}")
  del summary


def unknown_key_message(error: Exception, argv: list[str]) -> str:
  """'unknown config key K (in --config.a.K=v); did you mean S?' from ml_collections' error."""
  while error.args and isinstance(error.args[0], Exception):
    error = error.args[0]
  text = str(error.args[0] if error.args else error)
  key = re.search(r"""['"]+([^'"\\]+)""", text)
  key = key.group(1) if key else text
  overrides = [a.split("=")[0] for a in argv
               if a.startswith("--config.") and key in a.split("=")[0].split(".")]
  suggestion = re.search(r'Did you mean "([^"]+)"', text)
  return (f"unknown config key {key!r}" + (f" in {', '.join(overrides)}" if overrides else "")
          + (f"; did you mean {suggestion.group(1)!r}?" if suggestion else ""))


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing, with config overrides of unknown keys as one clear line, not a trace."""
  try:
    return FLAGS(argv)
  except (AttributeError, KeyError) as e:  # ml_collections: an override names no config key
    print(f"FATAL config error: {unknown_key_message(e, argv)}", file=sys.stderr)
    sys.exit(2)
  except flags.Error as e:
    print(f"FATAL flags parsing error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
