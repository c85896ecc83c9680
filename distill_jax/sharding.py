"""Device meshes and placement by big_vision-style ``(regex, PartitionSpec)`` rules over
"/"-joined paths of any pytree, first fullmatch wins; an unclaimed path, or a spec that does
not divide a shape, is an error naming the path, shape and axis.
"""
from typing import Any, Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from distill_jax.errors import InputError
from distill_jax.partition.core import claim_paths
from distill_jax.paths import tree_paths

BATCH_AXES = ("data", "fsdp")
REPLICATED = ((".*", ()),)


def make_mesh(axes: Optional[dict] = None, devices: Optional[list] = None) -> Mesh:
  """A mesh of ``devices`` (default all) with ``axes`` {name: size}; one size may be -1."""
  devices = list(jax.devices() if devices is None else devices)
  axes = dict(axes or {"data": -1})
  sizes = list(axes.values())
  if sizes.count(-1) > 1:
    raise InputError(f"mesh {axes}: at most one axis may have size -1")
  known = int(np.prod([s for s in sizes if s != -1]))
  if -1 in sizes:
    if len(devices) % known:
      raise InputError(f"mesh {axes}: {len(devices)} devices are not divisible by {known}")
    sizes[sizes.index(-1)] = len(devices) // known
  if int(np.prod(sizes)) != len(devices):
    raise InputError(f"mesh {axes} needs {int(np.prod(sizes))} devices, there are {len(devices)}")
  return Mesh(np.asarray(devices).reshape(sizes), tuple(axes))


def batch_axes(mesh: Mesh) -> tuple:
  return tuple(a for a in BATCH_AXES if a in mesh.axis_names)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(batch_axes(mesh)))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_size_per_step(mesh: Mesh) -> int:
  """How many ways a batch is split (its size must be a multiple of this)."""
  return int(np.prod([mesh.shape[a] for a in batch_axes(mesh)]))


def _check_spec(path: str, shape: tuple, spec: tuple, mesh: Mesh, pattern: str) -> None:
  if len(spec) > len(shape):
    raise InputError(f"sharding rule {pattern!r}: spec {spec} has {len(spec)} entries but "
                     f"{path!r} has shape {shape}")
  for dim, axes in enumerate(spec):
    if axes is None:
      continue
    names = axes if isinstance(axes, tuple) else (axes,)
    unknown = [a for a in names if a not in mesh.axis_names]
    if unknown:
      raise InputError(f"sharding rule {pattern!r} for {path!r}: mesh has no axis {unknown}; "
                       f"axes are {mesh.axis_names}")
    size = int(np.prod([mesh.shape[a] for a in names]))
    if shape[dim] % size:
      raise InputError(f"sharding rule {pattern!r}: {path!r} has shape {shape}; dimension {dim} "
                       f"({shape[dim]}) is not divisible by mesh axis {axes!r} of size {size}")


def tree_specs(tree: Any, rules: Sequence, mesh: Mesh) -> Any:
  """A PartitionSpec for every leaf of ``tree``, from the first rule whose regex fullmatches."""
  rules = [(pattern, tuple(spec) if spec is not None else ()) for pattern, spec in rules]
  flat = tree_paths(tree)
  claims = claim_paths(flat, [("regex", pattern, str(i)) for i, (pattern, _) in enumerate(rules)],
                       what="sharding rule")
  specs = {}
  for path, leaf in flat.items():
    pattern, spec = rules[int(claims[path][0][0])]
    _check_spec(path, tuple(np.shape(leaf)), spec, mesh, pattern)
    specs[path] = P(*spec)
  leaves = [specs[p] for p in flat]
  return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(tree), leaves)


def tree_shardings(tree: Any, rules: Sequence, mesh: Mesh) -> Any:
  return jax.tree.map(lambda spec: NamedSharding(mesh, spec), tree_specs(tree, rules, mesh),
                      is_leaf=lambda x: isinstance(x, P))


def place(tree: Any, shardings: Any, copy: bool = False) -> Any:
  """``device_put`` by shardings; ``copy=True`` never aliases the inputs (needed before
  donating a state whose arrays are shared, e.g. copied from a teacher)."""
  return jax.device_put(tree, shardings, may_alias=False if copy else None)


def shard_batch(batch: dict, mesh: Mesh) -> dict:
  """This process's numpy batch as global arrays split along the batch axes (the global
  batch is the processes' slices in process order)."""
  ways = batch_size_per_step(mesh) // jax.process_count()
  for key, value in batch.items():
    if value.shape[0] % max(ways, 1):
      raise InputError(f"batch[{key!r}] has {value.shape[0]} examples on this process, not "
                       f"divisible by its {ways} devices along mesh axes {batch_axes(mesh)}; "
                       f"choose a batch_size that is a multiple of {batch_size_per_step(mesh)}")
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


def process_batch(batch: dict) -> dict:
  """This process's contiguous slice of a global numpy batch."""
  n, p = jax.process_count(), jax.process_index()
  if n == 1:
    return batch
  out = {}
  for key, value in batch.items():
    if len(value) % n:
      raise InputError(f"global batch[{key!r}] of {len(value)} does not split over {n} processes")
    size = len(value) // n
    out[key] = value[p * size:(p + 1) * size]
  return out
