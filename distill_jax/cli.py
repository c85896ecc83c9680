"""The command-line shell shared by ``distill_jax.main`` and ``distill_jax.search``.

``--config=configs/x.py[:arg] --workdir=DIR [--config.a.b=value ...]`` (absl flags plus
ml_collections config_flags, config locked). A config override that names no key, or a bad
value, stops the program with one line naming it (exit status 2), before anything is written.
"""
import logging
import os
import re
import sys
from typing import Callable

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from distill_jax import distributed

FLAGS = flags.FLAGS


def unknown_key_message(error: Exception, argv: list[str]) -> str:
  """'unknown config key K in --config.a.K; did you mean S?' from ml_collections' error."""
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
  """absl flag parsing, with bad config overrides as one clear line instead of a traceback."""
  try:
    return FLAGS(argv)
  except (AttributeError, KeyError) as e:  # ml_collections: an override names no config key
    print(f"FATAL config error: {unknown_key_message(e, argv)}", file=sys.stderr)
    sys.exit(2)
  except flags.Error as e:
    print(f"FATAL flags parsing error: {e}", file=sys.stderr)
    sys.exit(2)


def run(job: Callable[[object, str], object], workdir_help: str) -> None:
  """Define ``--config`` and ``--workdir`` and run ``job(config, workdir)`` under absl."""
  config_flags.DEFINE_config_file("config", None, "Path to a configs/*.py file.",
                                  lock_config=True)
  flags.DEFINE_string("workdir", None, workdir_help)
  flags.mark_flags_as_required(["config", "workdir"])

  def main(argv):
    del argv
    # The console shows progress and results; the full log (every partition match included)
    # goes to WORKDIR/log.txt.
    distributed.initialize(FLAGS.config)   # before anything touches a device
    os.makedirs(FLAGS.workdir, exist_ok=True)
    absl_logging.get_absl_handler().setLevel(logging.WARNING)
    handler = logging.FileHandler(os.path.join(FLAGS.workdir, "log.txt"))
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    job(FLAGS.config, FLAGS.workdir)

  app.run(main, flags_parser=parse_flags)
