"""Evaluate and adjust: plans (a name plus dotted overrides) scored once each, the result kept
in ``<dir>/<name>/result.json`` under a key of what defines it and reused while the key holds.
"""
import hashlib
import json
import logging
import os
from typing import Any, Callable, Optional, Sequence

from distill_jax.config import plan_overrides
from distill_jax.errors import InputError
from distill_jax.files import move_aside, write_json

log = logging.getLogger(__name__)


def key_of(*parts: Any) -> str:
  """sha256 of the parts as sorted JSON (configs as dicts, data identities, settings)."""
  text = json.dumps([p.to_dict() if hasattr(p, "to_dict") else p for p in parts],
                    sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()


def read_result(path: str) -> Optional[dict]:
  """A cached ``{"key", "result"}``, or None when there is none or it cannot be read."""
  try:
    with open(path) as f:
      record = json.load(f)
    return record if isinstance(record, dict) and "key" in record else None
  except (OSError, ValueError):
    return None


def run_plans(plans: Sequence[dict], score: Callable[[dict, str], dict], directory: str,
              key: Callable[[dict], str], what: str = "plans",
              stop: Optional[Callable[[dict], bool]] = None) -> list[dict]:
  """``[{"plan": plan, **result}]`` in plan order, up to the first result ``stop`` accepts."""
  entries, names = [], set()
  for p in plans:
    plan_overrides(p, what)            # a safe name (it becomes a directory)
    if p["name"] in names:
      raise InputError(f"{what}: two plans are named {p['name']!r}")
    names.add(p["name"])
    where = os.path.join(directory, p["name"])
    path, k = os.path.join(where, "result.json"), key(p)
    cached = read_result(path)
    if cached is not None and cached["key"] == k:
      result = cached["result"]
    else:
      # A plan started (or scored) under another key: its checkpoints are of other inputs.
      started = read_result(os.path.join(where, "key.json"))
      if started is not None and started["key"] != k:
        log.warning("%s %s changed since it was started; moved the old run to %s", what,
                    p["name"], move_aside(where))
      write_json(os.path.join(where, "key.json"), {"key": k})
      result = score(p, where)
      write_json(path, {"key": k, "result": result})
    entries.append({"plan": p, **result})
    if stop is not None and stop(result):
      break
  return entries
