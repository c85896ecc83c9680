"""The command-line shell shared by ``distill_jax.main`` and ``distill_jax.search``.

``--config=configs/x.py[:arg] --workdir=DIR [--config.a.b=value ...]`` (absl flags plus
ml_collections config_flags, config locked). A config override that names no key, or a bad
value, stops the program with one line naming it (exit status 2), before anything is written.
"""
import contextlib
import fcntl
import logging
import os
import re
import socket
import sys
from typing import Callable, Iterator, Optional

import jax
from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from distill_jax import distributed
from distill_jax.data.sources import DatasetUnavailableError
from distill_jax.loop import Preempted

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


class WorkdirBusy(RuntimeError):
  """Another run holds the workdir's lock."""


# Errors that bad input raises: one line, no traceback (the traceback goes to the log).
INPUT_ERRORS = (ValueError, KeyError, TypeError, FileNotFoundError, DatasetUnavailableError,
                WorkdirBusy)


def run(job: Callable[..., object], workdir_help: str,
        validate: Optional[Callable[[object], object]] = None) -> None:
  """Define ``--config`` and ``--workdir`` and run ``job(config, workdir[, checked])``.

  ``validate(config)`` runs first, before anything is written to the workdir; what it returns
  is passed on to the job. Exit status: 2 for bad input, 3 for a non-finite loss, 143 when
  SIGTERM stopped the run after saving a checkpoint.
  """
  config_flags.DEFINE_config_file("config", None, "Path to a configs/*.py file.",
                                  lock_config=True)
  flags.DEFINE_string("workdir", None, workdir_help)
  flags.mark_flags_as_required(["config", "workdir"])

  def main(argv):
    del argv
    absl_logging.get_absl_handler().setLevel(logging.WARNING)
    try:
      distributed.initialize(FLAGS.config)   # before anything touches a device
      checked = validate(FLAGS.config) if validate else None
      with workdir_lock(FLAGS.workdir):
        # The console shows progress and results; the full log (every partition match
        # included) goes to WORKDIR/log.txt.
        handler = logging.FileHandler(os.path.join(FLAGS.workdir, "log.txt"))
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger().addHandler(handler)
        logging.getLogger().setLevel(logging.INFO)
        job(FLAGS.config, FLAGS.workdir, *([checked] if validate else []))
    except Preempted as e:
      print(str(e), file=sys.stderr)
      sys.exit(143)
    except FloatingPointError as e:
      logging.info("stopped", exc_info=True)      # traceback to the log file only
      print(f"FATAL: {e}", file=sys.stderr)
      sys.exit(3)
    except INPUT_ERRORS as e:
      logging.info("bad input", exc_info=True)
      message = e.args[0] if isinstance(e, KeyError) and e.args else e
      print(f"FATAL: {message}", file=sys.stderr)
      sys.exit(2)

  app.run(main, flags_parser=parse_flags)


@contextlib.contextmanager
def workdir_lock(workdir: str) -> Iterator[None]:
  """Hold ``WORKDIR/.lock`` (an OS lock: released even if the process is killed), so a second
  run on the same workdir refuses instead of writing beside the first. Process 0 only: the
  hosts of one multi-host run share their workdir."""
  os.makedirs(workdir, exist_ok=True)
  if jax.process_index() != 0:
    yield
    return
  with open(os.path.join(workdir, ".lock"), "a+") as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      f.seek(0)
      owner = f.read().strip() or "another process"
      raise WorkdirBusy(f"workdir {workdir} is in use by another run ({owner}); wait for it to "
                        "finish or use another --workdir") from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    f.flush()
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)
