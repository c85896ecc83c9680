"""The run manifest (``WORKDIR/manifest.json``: resolved config, data identity, code version):
a rerun with another one stops before writing anything, naming the keys that differ, unless
``--fresh`` (the old run moves to ``previous/``) or ``--allow_changes`` names them all.
"""
import hashlib
import json
import os
from typing import Any, Sequence

from distill_jax.errors import InputError
from distill_jax.files import move_aside, write_json

FILE, KEPT = "manifest.json", (".lock", "previous")     # KEPT: what --fresh leaves in place
HARMLESS = ("log_every", "eval_every", "checkpoint_every", "distributed.coordinator_address",
            "distributed.timeout")


def code_version() -> str:
  """sha256 (16 hex digits) of the package's Python sources."""
  root, h = os.path.dirname(os.path.abspath(__file__)), hashlib.sha256()
  for folder, _, files in sorted(os.walk(root)):
    for name in sorted(f for f in files if f.endswith(".py")):
      path = os.path.join(folder, name)
      h.update(os.path.relpath(path, root).encode() + open(path, "rb").read())
  return h.hexdigest()[:16]


def make(command: str, config, data_identity: Any) -> dict:
  """The manifest of a run, JSON-normalised (so it compares equal to one read back). The
  process id is left out: every process of a multi-host run writes the same run."""
  resolved = config.to_dict()
  resolved["distributed"].pop("process_id", None)
  return json.loads(json.dumps({"command": command, "config": resolved,
                                "data": data_identity, "code": code_version()}, default=str))


def differences(old: Any, new: Any, prefix: str = "") -> dict[str, tuple]:
  """``{dotted key: (old, new)}``; config keys without their ``config.`` prefix."""
  if isinstance(old, dict) and isinstance(new, dict):
    return {k: v for key in sorted(set(old) | set(new))
            for k, v in differences(old.get(key), new.get(key), f"{prefix}{key}.").items()}
  name = prefix[:-1].removeprefix("config.")
  return {} if old == new else {name: (old, new)}


def holds_a_run(workdir: str) -> bool:
  return os.path.isdir(workdir) and any(e not in KEPT + ("log.txt",) for e in os.listdir(workdir))


def compare(workdir: str, manifest: dict, fresh: bool, allow: Sequence[str]) -> None:
  """Refuse (one line) a rerun whose manifest differs, unless ``fresh`` or allowed. Reads only."""
  bad = [k for k in allow if k not in HARMLESS + ("code",)]
  if bad:
    raise InputError(f"--allow_changes={','.join(bad)}: these keys can change results; only "
                     f"{', '.join(HARMLESS)} and code can be allowed (or start over: --fresh)")
  if fresh or not holds_a_run(workdir):
    return
  try:
    with open(os.path.join(workdir, FILE)) as f:
      old = json.load(f)
  except (OSError, ValueError):
    raise InputError(f"--workdir={workdir} holds a run without a readable {FILE} (written by "
                     "an older distill_jax?); --fresh moves it aside to start over") from None
  changed = {k: v for k, v in differences(old, manifest).items() if k not in allow}
  if changed:
    short = lambda v: (lambda t: t if len(t) <= 60 else t[:57] + "...")(json.dumps(v))
    raise InputError(
        f"--workdir={workdir} holds a run of another config/data/code ("
        + "; ".join(f"{k}: {short(a)} -> {short(b)}" for k, (a, b) in changed.items())
        + "); rerun with its config, use another --workdir, or --fresh to move the old run "
        "aside" + (" (or --allow_changes=code to resume with this code)"
                   if list(changed) == ["code"] else ""))


def claim(workdir: str, manifest: dict, fresh: bool) -> None:
  """After :func:`compare`, under the workdir's lock: move an old run aside when ``fresh``,
  then write the manifest."""
  if fresh and holds_a_run(workdir):
    print(f"--fresh: moved the previous run to {move_aside(workdir, keep=KEPT)}")
  write_json(os.path.join(workdir, FILE), manifest)
