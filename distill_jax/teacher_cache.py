"""Teacher outputs computed once and reused by every epoch (without augmentation they never
change): all the outputs the terms read, or the top-k logits and their classes. Keyed by the
teacher's weights, the data and the settings; a stale cache is rebuilt, never used.
"""
import json
import logging
import os
from typing import Any, Callable

import jax
import numpy as np

from distill_jax.errors import InputError
from distill_jax.files import atomic, write_json
from distill_jax.paths import fingerprint

log = logging.getLogger(__name__)


def cache_key(teacher_params: Any, arrays: dict, settings: dict) -> str:
  """sha256 over the teacher's weights, the training arrays and the cache settings."""
  return fingerprint({"teacher": teacher_params, "data": dict(arrays),
                      "settings": json.dumps(settings, sort_keys=True, default=str)})


def compute(outputs: dict[str, np.ndarray], mode: str, topk: int) -> dict[str, np.ndarray]:
  """The teacher's outputs (``{name: (N, ...)}``) in the batch keys the train step reads:
  ``teacher_<name>`` for ``full``; the top-k logits and their classes for ``topk``."""
  if mode == "full":
    return {f"teacher_{k}": np.asarray(v, np.float32) for k, v in outputs.items()}
  if mode == "topk" and "topk_values" in outputs:     # already reduced on the device
    return {f"teacher_{k}": np.asarray(v) for k, v in outputs.items()}
  if mode == "topk":
    if set(outputs) != {"logits"}:
      raise InputError(f"distill.cache='topk' keeps top-k logits, but the terms read the "
                       f"teacher's {sorted(outputs)}; use cache='full'")
    logits = np.asarray(outputs["logits"], np.float32)
    if not 1 <= topk <= logits.shape[-1]:
      raise InputError(f"distill.cache_topk={topk} must be in [1, {logits.shape[-1]}]")
    idx = np.argsort(-logits, axis=-1, kind="stable")[:, :topk].astype(np.int32)
    return {"teacher_topk_values": np.take_along_axis(logits, idx, -1), "teacher_topk_indices": idx}
  raise InputError(f"distill.cache={mode!r}: use '' (online teacher), 'full' or 'topk'")


def load_or_build(directory: str, key: str, build: Callable[[], dict]) -> dict[str, np.ndarray]:
  """The cached arrays for ``key`` in ``directory``; a missing or stale cache is (re)built."""
  data_path, key_path = os.path.join(directory, "outputs.npz"), os.path.join(directory, "key.json")
  if os.path.exists(key_path) and os.path.exists(data_path):
    with open(key_path) as f:
      saved = json.load(f)["key"]
    if saved == key:
      with np.load(data_path) as f:
        return {k: f[k] for k in f.files}
    log.warning("teacher cache in %s is stale (key %s..., expected %s...): rebuilding",
                directory, saved[:12], key[:12])
    print(f"teacher cache in {directory} is stale (teacher, data or preprocessing changed): "
          "rebuilding")
  arrays = build()
  if jax.process_index() == 0:
    os.makedirs(directory, exist_ok=True)
    with atomic(data_path) as tmp:
      np.savez(tmp, **arrays)
    write_json(key_path, {"key": key})   # written last: a kill in between leaves it stale
  return arrays
