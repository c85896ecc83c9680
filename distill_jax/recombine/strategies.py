"""The layer-level strategies ``random``, ``select``, ``average`` and their shared parts:
``layer_<i>`` groups are the layer sequences; other groups are copied by name.
"""
import re
from typing import Any, Callable, Optional, Sequence

import jax.numpy as jnp
import numpy as np

from distill_jax.errors import InputError
from distill_jax.partition import Partition
from distill_jax.registry import Registry

STRATEGIES: Registry = Registry("recombination strategy")
LAYER_GROUP = re.compile(r"layer_(\d+)")


def layer_groups(parts: Partition) -> list[str]:
  """The ``layer_<i>`` groups, by index."""
  names = [g for g in parts.names if LAYER_GROUP.fullmatch(g)]
  return sorted(names, key=lambda g: int(LAYER_GROUP.fullmatch(g).group(1)))


def plan_layers(n: int, m: int, layers: Optional[Sequence[int]] = None, every: int = 0) -> list:
  """Which of ``n`` teacher layers the ``m`` student layers keep.

  ``layers``: explicit indices (negative count from the head). ``every=k``: layers 0, k, 2k...
  plus the last (head). Otherwise: ``m`` evenly spaced layers keeping the first and last.
  """
  if m > n:
    raise InputError(f"impossible target: the student has {m} layers, the teacher only {n}")
  if layers is not None and len(layers):
    bad = [i for i in layers if not -n <= i < n]
    if bad:
      raise InputError(f"layer(s) {bad} out of range for a teacher of depth {n}")
    chosen = [i % n for i in layers]
  elif every:
    chosen = [i for i in range(n) if i % every == 0]
    chosen += [] if chosen[-1] == n - 1 else [n - 1]
  else:
    chosen = [int(i) for i in np.linspace(0, n - 1, m).round()]
  if len(chosen) != m:
    raise InputError(f"the plan keeps teacher layers {chosen} ({len(chosen)}) but the student "
                     f"has {m} layers")
  return chosen


def stage_layers(teacher_stage_sizes: Sequence[int],
                  student_stage_sizes: Sequence[int]) -> list[int]:
  """The ``layers`` of the ``select`` strategy for a model in stages whose blocks are numbered
  across stages (a ResNet under ``resnet.PARTITION_RULES``): in each stage, evenly spaced
  teacher blocks including its first (the one whose shapes change) and last. resnet56 ->
  resnet20 keeps blocks 0, 4, 8 of each stage."""
  if len(teacher_stage_sizes) != len(student_stage_sizes):
    raise InputError(f"stage_layers: teacher stages {tuple(teacher_stage_sizes)} and student "
                     f"stages {tuple(student_stage_sizes)} differ in number")
  layers, offset = [], 0
  for n, m in zip(teacher_stage_sizes, student_stage_sizes):
    layers += [offset + i for i in plan_layers(n, m)]
    offset += n
  return layers


def fill(s_group: str, s_members: dict, sources: list[tuple[str, dict]],
         reduce: Callable[[list], Any]) -> tuple[dict, list[str]]:
  """Fill each student key from the teacher groups in ``sources`` whose array has that key and
  the student's shape; ``reduce`` turns the matching arrays into one. Returns the new members
  and the teacher groups that contributed."""
  out, used = {}, []
  for key, target in s_members.items():
    matches = [(name, m[key]) for name, m in sources
               if key in m and np.shape(m[key]) == np.shape(target)]
    if not matches:
      seen = {f"{name}/{key}": np.shape(m[key]) for name, m in sources if key in m}
      raise InputError(f"student {s_group}/{key} has shape {np.shape(target)}; no teacher "
                       f"array fits it (candidates: {seen or 'none with this key'})")
    out[key] = reduce([v for _, v in matches])
    used += [name for name, _ in matches if name not in used]
  return out, used


def _first(values: list) -> Any:
  return values[0]


def _mean(values: list) -> Any:
  return jnp.mean(jnp.stack(values), axis=0) if len(values) > 1 else values[0]


def fill_from_blocks(teacher: Partition, student: Partition, blocks: list[list[int]],
                     reduce: Callable) -> tuple[dict, set, dict]:
  """Student layer j takes ``reduce`` over teacher layers ``blocks[j]``; other groups are
  copied by name. The building block of every layer-level strategy."""
  t_layers, s_layers = layer_groups(teacher), layer_groups(student)
  if not s_layers:
    raise InputError(f"the student partition has no layer_<i> groups (groups: {student.names}); "
                     "use a depth rule such as ('depth', r'Dense_(\\d+)')")
  groups, reused, used = {}, set(), {}
  for s_name, block in zip(s_layers, blocks):
    if not block:
      raise InputError(f"empty group: student {s_name} would take no teacher layer")
    sources = [(t_layers[i], teacher.groups[t_layers[i]]) for i in block]
    groups[s_name], used[s_name] = fill(s_name, student.groups[s_name], sources, reduce)
    reused |= {(s_name, k) for k in groups[s_name]}
  for name, members in student.groups.items():
    if name in groups:
      continue
    if name not in teacher.groups:
      raise InputError(f"student group {name!r} has no teacher group of that name "
                       f"(teacher groups: {teacher.names})")
    groups[name], used[name] = fill(name, members, [(name, teacher.groups[name])], _first)
    reused |= {(name, k) for k in groups[name]}
  return groups, reused, {"teacher_groups_used": used}


@STRATEGIES.register("random")
def random_init(teacher: Partition, student: Partition, context=None, **unused) -> tuple:
  """Keep the student's random initialisation: the 'no reuse' reference."""
  return dict(student.groups), set(), {}


@STRATEGIES.register("copy")
def copy_groups(teacher: Partition, student: Partition, context=None, *,
                groups: Sequence[str] = ()) -> tuple:
  """Student groups ``groups`` (every group the teacher also has, when empty) copied member by
  member from the teacher's group of that name (shapes must fit); the others keep their random
  initialisation. E.g. a CNN student over the teacher's token embeddings."""
  names = list(groups) or [n for n in student.names if n in teacher.groups]
  missing = [n for n in names if n not in teacher.groups or n not in student.groups]
  if missing or not names:
    raise InputError(f"copy: group(s) {missing or names} are not in both partitions (teacher: "
                     f"{teacher.names}, student: {student.names})")
  out, reused, used = dict(student.groups), set(), {}
  for name in names:
    out[name], used[name] = fill(name, student.groups[name], [(name, teacher.groups[name])],
                                 _first)
    reused |= {(name, k) for k in out[name]}
  return out, reused, {"teacher_groups_used": used}


@STRATEGIES.register("select")
def select(teacher: Partition, student: Partition, context=None, *,
           layers: Optional[Sequence[int]] = None, every: int = 0) -> tuple:
  """Student layer j is a copy of teacher layer ``plan[j]`` (see :func:`plan_layers`)."""
  plan = plan_layers(len(layer_groups(teacher)), len(layer_groups(student)), layers, every)
  groups, reused, info = fill_from_blocks(teacher, student, [[i] for i in plan], _first)
  return groups, reused, dict(info, teacher_layers=plan)


def consecutive_blocks(n: int, m: int) -> list[list[int]]:
  """``n`` layers in ``m`` consecutive blocks; the first ``n % m`` blocks get one extra layer
  (numpy's ``array_split``): 10 into 3 is [0-3], [4-6], [7-9]."""
  if m > n:
    raise InputError(f"impossible target: the student has {m} layers, the teacher only {n}")
  return [b.tolist() for b in np.array_split(np.arange(n), m)]


@STRATEGIES.register("average")
def average(teacher: Partition, student: Partition, context=None) -> tuple:
  """Student layer j is the mean of the j-th block of consecutive teacher layers (of the
  members with its shapes: an input layer or head of its own shape is copied)."""
  blocks = consecutive_blocks(len(layer_groups(teacher)), len(layer_groups(student)))
  groups, reused, info = fill_from_blocks(teacher, student, blocks, _mean)
  return groups, reused, dict(info, blocks=blocks)
