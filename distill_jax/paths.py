"""One path language: a pytree leaf is named by its keys joined with "/" (``Dense_3/kernel``),
for parameters, rules, sharding and features alike.
"""
import re
from typing import Any, Mapping

from flax import traverse_util

SEP = "/"


def compile_regex(pattern: str, what: str) -> re.Pattern:
  """``re.compile``, with a bad pattern as an error naming it and where it came from."""
  try:
    return re.compile(pattern)
  except (re.error, TypeError) as e:
    from distill_jax.errors import InputError
    raise InputError(f"{what}: {pattern!r} is not a valid regex ({e})") from None


def flatten(tree: Mapping[str, Any]) -> dict[str, Any]:
  """Nested dict -> ``{"a/b/c": leaf}`` in insertion (i.e. layer) order."""
  return traverse_util.flatten_dict(dict(tree), sep=SEP)


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
  """Inverse of :func:`flatten`."""
  return traverse_util.unflatten_dict(dict(flat), sep=SEP)


def _key_name(key: Any) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def tree_paths(tree: Any) -> dict[str, Any]:
  """``{"a/b/0/c": leaf}`` for any pytree (dicts, dataclasses such as a TrainState, tuples)."""
  import jax
  leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {SEP.join(_key_name(k) for k in path): leaf for path, leaf in leaves}


def fingerprint(tree: Any) -> str:
  """sha256 over a pytree's paths, shapes, dtypes and bytes (weights' or data's identity)."""
  import hashlib
  import jax
  import numpy as np
  h = hashlib.sha256()
  for path, leaf in sorted(jax.tree_util.tree_flatten_with_path(tree)[0],
                           key=lambda item: jax.tree_util.keystr(item[0])):
    leaf = np.ascontiguousarray(jax.device_get(leaf))
    h.update(f"{jax.tree_util.keystr(path)}{leaf.shape}{leaf.dtype}".encode())
    h.update(leaf.tobytes())
  return h.hexdigest()


def count_params(tree: Any) -> int:
  """Number of scalar parameters in a pytree."""
  import jax  # local: keeps this module importable without initialising a backend
  return int(sum(x.size for x in jax.tree_util.tree_leaves(tree)))
