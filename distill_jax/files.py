"""Atomic file writes: a reader sees the old file or the new one, never a torn one."""
import contextlib
import json
import os
from typing import Any, Iterator


@contextlib.contextmanager
def atomic(path: str) -> Iterator[str]:
  """Yield a temporary path beside ``path``; when the block ends without an error, the file
  written there is synced and renamed over ``path`` (a crash leaves ``path`` as it was)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  root, ext = os.path.splitext(path)
  tmp = f"{root}.tmp{os.getpid()}{ext}"     # same extension: writers that dispatch on it agree
  try:
    yield tmp
    with open(tmp, "rb") as f:
      os.fsync(f.fileno())
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def write_text(path: str, text: str) -> None:
  with atomic(path) as tmp, open(tmp, "w") as f:
    f.write(text)


def write_json(path: str, obj: Any) -> None:
  write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def move_aside(directory: str, keep: tuple = ()) -> str:
  """Move every entry of ``directory`` but ``keep`` (and ``previous``) into
  ``directory/previous/<time>/``, never deleting anything; returns where they went."""
  import shutil
  import time
  target = os.path.join(directory, "previous", time.strftime("%Y%m%d-%H%M%S"))
  while os.path.exists(target):
    target += "_"
  os.makedirs(target)
  for name in os.listdir(directory):
    if name not in tuple(keep) + ("previous",):
      shutil.move(os.path.join(directory, name), os.path.join(target, name))
  return target
