"""Teacher outputs computed once and reused by every epoch of distillation.

For recipes without data augmentation the teacher's output on a training example never
changes, so its forward pass (often most of a KD step) can be paid once: full logits, or
only the top-k logits and their class indices (k/C of the space; the student then matches the
teacher's distribution renormalised over those k classes). With augmentation (mixup, crops)
every step shows new inputs and only the online teacher teaches consistently, so the cache
refuses such configs.

The cache lives in ``WORKDIR/teacher_cache/`` and is keyed by a hash of the teacher's
parameters, the training data and the preprocessing; a cache whose key differs is stale and
is rebuilt, never used.
"""
import hashlib
import json
import logging
import os
from typing import Any, Callable

import jax
import numpy as np

from distill_jax.data import Dataset

log = logging.getLogger(__name__)


def hash_tree(h: "hashlib._Hash", tree: Any) -> None:
  """Feed every leaf of ``tree`` (by sorted path: names and bytes) into hash ``h``."""
  for path, leaf in sorted(jax.tree_util.tree_flatten_with_path(tree)[0],
                           key=lambda item: jax.tree_util.keystr(item[0])):
    h.update(jax.tree_util.keystr(path).encode())
    h.update(np.ascontiguousarray(jax.device_get(leaf)).tobytes())


def cache_key(teacher_params: Any, dataset: Dataset, preprocessing: dict, mode: str,
              topk: int) -> str:
  """sha256 over the teacher's weights, the training inputs and the cache settings."""
  h = hashlib.sha256()
  hash_tree(h, teacher_params)
  h.update(np.ascontiguousarray(dataset.x_train).tobytes())
  h.update(json.dumps({"dataset": dataset.name, "shape": list(dataset.x_train.shape),
                       "preprocessing": preprocessing, "mode": mode, "topk": topk},
                      sort_keys=True, default=str).encode())
  return h.hexdigest()


def compute(predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, mode: str,
            topk: int) -> dict[str, np.ndarray]:
  """Teacher outputs for every row of ``x`` in the batch keys the train step understands."""
  logits = predict(x).astype(np.float32)
  if mode == "logits":
    return {"teacher_logits": logits}
  if mode == "topk":
    if not 1 <= topk <= logits.shape[-1]:
      raise ValueError(f"distill.cache_topk={topk} must be in [1, {logits.shape[-1]}]")
    idx = np.argsort(-logits, axis=-1, kind="stable")[:, :topk].astype(np.int32)
    return {"teacher_topk_values": np.take_along_axis(logits, idx, -1), "teacher_topk_indices": idx}
  raise ValueError(f"distill.cache={mode!r}: use '' (online teacher), 'logits' or 'topk'")


def load_or_build(workdir: str, key: str, build: Callable[[], dict]) -> dict[str, np.ndarray]:
  """The cached arrays for ``key``; a missing or stale cache is (re)built and saved."""
  directory = os.path.join(workdir, "teacher_cache")
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
    tmp = data_path + ".tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, data_path)           # the key is written last: a torn write is just stale
    with open(key_path, "w") as f:
      json.dump({"key": key}, f)
  return arrays
