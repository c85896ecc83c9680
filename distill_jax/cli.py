"""The command-line shell and error policy of every command: ``--config=configs/x.py[:arg]
[--config.a.b=value ...] --workdir=DIR``. Bad input is one ``FATAL:`` line, exit 2; a bug keeps
its traceback, exit 1; 3: a non-finite loss; 143 / 130: SIGTERM / SIGINT, after saving.
"""
import contextlib
import fcntl
import logging
import os
import re
import socket
import sys
import traceback
from typing import Callable, Iterator, Optional

import jax
from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from distill_jax import distributed, manifest
from distill_jax.errors import InputError
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
  except (flags.Error, ValueError) as e:   # ValueError: a config file refused its argument
    print(f"FATAL flags parsing error: {e}", file=sys.stderr)
    sys.exit(2)


def run(job: Callable[..., object], workdir_help: Optional[str] = None,
        check: Optional[Callable[[object], object]] = None, config: bool = True) -> None:
  """Run ``job(config, workdir, checked)`` (only the arguments this command has) under the
  error policy. ``check(config)`` runs first, before anything is written; a command with a
  workdir compares its run manifest, holds the workdir's lock and logs to ``log.txt``."""
  if config:
    config_flags.DEFINE_config_file("config", None, "Path to a configs/*.py file.",
                                    lock_config=True)
    flags.mark_flag_as_required("config")
  if workdir_help:
    flags.DEFINE_string("workdir", None, workdir_help)
    flags.mark_flag_as_required("workdir")
    flags.DEFINE_bool("fresh", False, "Move a previous run in --workdir aside and start over.")
    flags.DEFINE_list("allow_changes", [], "Keys that may differ from the run in --workdir "
                      f"(only {', '.join(manifest.HARMLESS)}, and code).")

  def main(argv):
    del argv
    absl_logging.get_absl_handler().setLevel(logging.WARNING)
    workdir = FLAGS.workdir if workdir_help else None
    try:
      if config:
        distributed.initialize(FLAGS.config)   # before anything touches a device
      args = [FLAGS.config] if config else []
      checked = check(FLAGS.config) if check else None
      if workdir:
        run_manifest = manifest.make(job.__name__, FLAGS.config, checked.data.identity)
        manifest.compare(workdir, run_manifest, FLAGS.fresh, FLAGS.allow_changes)
      with (workdir_lock(workdir) if workdir else contextlib.nullcontext()):
        if workdir:
          if jax.process_index() == 0:
            manifest.claim(workdir, run_manifest, FLAGS.fresh)
          # The console shows progress and results; the full log (every partition match
          # included) goes to WORKDIR/log.txt.
          handler = logging.FileHandler(os.path.join(workdir, "log.txt"))
          handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: "
                                                 "%(message)s"))
          logging.getLogger().addHandler(handler)
          logging.getLogger().setLevel(logging.INFO)
          args.append(workdir)
        job(*args, *([checked] if check else []))
    except Preempted as e:
      print(str(e), file=sys.stderr)
      stop(e.exit_code)
    except FloatingPointError as e:
      logging.info("stopped", exc_info=True)      # traceback to the log file only
      print(f"FATAL: {e}", file=sys.stderr)
      stop(3)
    except InputError as e:
      logging.info("bad input", exc_info=True)
      print(f"FATAL: {e}", file=sys.stderr)
      stop(2)
    except Exception:                               # a bug: keep the whole traceback
      logging.info("unexpected error", exc_info=True)
      traceback.print_exc()
      stop(1)

  app.run(main, flags_parser=parse_flags)


def stop(code: int) -> None:
  """Exit now with ``code``: after an error, Orbax's background threads (a failed write) can
  block the interpreter's shutdown forever, so the logs are flushed and the process ends."""
  logging.shutdown()
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(code)


@contextlib.contextmanager
def workdir_lock(workdir: str) -> Iterator[None]:
  """Hold ``WORKDIR/.lock`` (an OS lock: released even if the process is killed), so a second
  run on the same workdir refuses instead of writing beside the first. Process 0 only: the
  hosts of one multi-host run share their workdir."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise InputError(f"--workdir={workdir} exists and is not a directory")
  try:
    os.makedirs(workdir, exist_ok=True)
    f = open(os.path.join(workdir, ".lock"), "a+") if jax.process_index() == 0 else None
  except OSError as e:
    raise InputError(f"--workdir={workdir} cannot be written: {e.strerror}") from None
  if f is None:
    yield
    return
  with f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      f.seek(0)
      owner = f.read().strip() or "another process"
      raise InputError(f"workdir {workdir} is in use by another run ({owner}); wait for it to "
                        "finish or use another --workdir") from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    f.flush()
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)
