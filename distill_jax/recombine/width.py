"""``width``: a narrower student keeping each layer's most important units (by weight norm or
mean activation), the next layer's input rows sliced to match.
"""
from typing import Optional, Sequence

import numpy as np

from distill_jax.errors import InputError
from distill_jax.partition import Partition
from distill_jax.recombine.context import Context
from distill_jax.recombine.similarity import layer_outputs
from distill_jax.recombine.strategies import STRATEGIES, layer_groups, plan_layers


def _kernel_keys(members: dict, group: str) -> list[str]:
  """The group's kernels: one (Dense), or several reading the same input and adding into the
  same output units (GraphSAGE's self and neighbour kernels), sliced alike."""
  keys = [k for k in members if k.endswith("kernel")]
  if not keys:
    raise InputError(f"width: layer group {group!r} has no kernel, only {list(members)}")
  return keys


def unit_importance(members: dict, kernel_keys: list[str]) -> np.ndarray:
  """L2 norm of each output unit's incoming weights (all kernels, and biases)."""
  sq = 0.0
  for kernel_key in kernel_keys:
    kernel = np.asarray(members[kernel_key])
    sq = sq + (kernel.reshape(-1, kernel.shape[-1]) ** 2).sum(0)
    bias_key = kernel_key[:-len("kernel")] + "bias"
    if bias_key in members:
      sq = sq + np.asarray(members[bias_key]) ** 2
  return np.sqrt(sq)


@STRATEGIES.register("width")
def width(teacher: Partition, student: Partition, context: Optional[Context] = None, *,
          layers: Optional[Sequence[int]] = None, every: int = 0,
          importance: str = "weight") -> tuple:
  context = context or Context()
  t_names, s_names = layer_groups(teacher), layer_groups(student)
  plan = plan_layers(len(t_names), len(s_names), layers, every)
  if importance == "activation":
    outputs = layer_outputs(teacher, [t_names[i] for i in plan], context)
  elif importance != "weight":
    raise InputError(f"width importance {importance!r}: use 'weight' or 'activation'")
  groups, reused, kept_units = {}, set(), {}
  previous: Optional[np.ndarray] = None     # units kept by the previous student layer
  for j, (s_name, t_idx) in enumerate(zip(s_names, plan)):
    t_members, s_members = teacher.groups[t_names[t_idx]], student.groups[s_name]
    kks = _kernel_keys(s_members, s_name)
    t_kernel, s_kernel = np.asarray(t_members[kks[0]]), np.asarray(s_members[kks[0]])
    units = np.arange(t_kernel.shape[-1])
    if s_kernel.shape[-1] < t_kernel.shape[-1]:
      score = (np.abs(outputs[j]).reshape(-1, t_kernel.shape[-1]).mean(0)
               if importance == "activation" else unit_importance(t_members, kks))
      units = np.sort(np.argsort(-score, kind="stable")[:s_kernel.shape[-1]])
    rows = previous if previous is not None else np.arange(t_kernel.shape[-2])
    new = {}
    for key, target in s_members.items():
      value = np.asarray(t_members.get(key, np.zeros(0)))
      if key in kks:
        value = value[..., rows, :][..., units]
      elif value.ndim >= 1 and key in t_members:
        value = value[..., units]
      if value.shape != np.shape(target):
        raise InputError(f"width: student {s_name}/{key} has shape {np.shape(target)} but the "
                         f"sliced teacher {t_names[t_idx]}/{key} has {value.shape} "
                         f"(teacher shape {np.shape(t_members.get(key))})")
      new[key] = value
      reused.add((s_name, key))
    groups[s_name], previous = new, units
    kept_units[s_name] = len(units)
  for name, members in student.groups.items():
    groups.setdefault(name, dict(members))
  return groups, reused, {"teacher_layers": plan, "importance": importance, "units": kept_units}
