"""``channels``: a narrower (and optionally shallower) ResNet cut out of a ResNet teacher.

Depth: each stage keeps evenly spaced teacher blocks including its first and last
(:func:`strategies.stage_layers`), or the global block indices ``layers`` as ``select`` takes
them. Width, read off the student's shapes: every channel set of ``models.resnet.channel_sets``
(the stem's output, each stage's residual stream, each block's inner channels) keeps its most
important channels, in the teacher's order, and every array on that set is sliced alike: the
convs that write the channels (output axis), those that read them (input axis), their batch
norms' scale, bias and running statistics, and the head's rows.

Importance (``importance=``), summed over the batch norms on a set in the kept blocks (for a
stream: every kept block's norm on it):
  ``"weight"``: |gamma| of the batch norm (network slimming, Liu et al. 2017: BN scales rank
  channels without data);
  ``"activation"`` (label-free, the teacher run on ``context.batch``): the mean |y| of the batch
  norm's output over images and positions.
"""
from collections import Counter
from typing import Optional, Sequence

import numpy as np

from distill_jax.errors import InputError
from distill_jax.models.resnet import blocks, channel_sets
from distill_jax.partition import Partition
from distill_jax.recombine.context import Context
from distill_jax.recombine.prune import activation_stats
from distill_jax.recombine.strategies import STRATEGIES, layer_groups, plan_layers, stage_layers


def _flat(parts: Partition, what: str) -> dict:
  """``{path: (group, key)}``; stacked parameters (one array for several layers) refused."""
  stacked = [c.path for c in parts.claims if c.index is not None]
  if stacked:
    raise InputError(f"channels: the {what} has stacked parameters {stacked[:3]}; this "
                     "strategy slices one array per conv (models/resnet.py)")
  return {c.path: (c.group, c.key) for c in parts.claims}


def _stage_sizes(paths) -> list[int]:
  """Blocks per stage, read off the ``stage_{i}/block_{j}`` paths."""
  per_stage = Counter(i for i, _ in blocks(paths))
  return [per_stage[i] for i in sorted(per_stage)]


def _sources(teacher: Partition, student: Partition, plan: list) -> dict:
  """Student path -> the teacher path it is cut from (student layer k <- teacher layer
  plan[k]; other groups by name)."""
  t_path = {(c.group, c.key): c.path for c in teacher.claims}
  t_layers, s_layers = layer_groups(teacher), layer_groups(student)
  group_map = {s: t_layers[i] for s, i in zip(s_layers, plan)}
  out = {}
  for c in student.claims:
    source = (group_map.get(c.group, c.group), c.key)
    if source not in t_path:
      raise InputError(f"channels: student {c.path} ({c.group}:{c.key}) has no teacher array "
                       f"at {source[0]}:{source[1]} (the student's blocks differ from the "
                       "teacher's, e.g. a projection shortcut only one of them has)")
    out[c.path] = t_path[source]
  return out


def _set_map(sources: dict, s_sets: dict, t_sets: dict, s_shape, t_shape) -> dict:
  """Student channel set -> ``(teacher set it is cut from, student size, teacher size)``, the
  sizes from the first array on the set (the others are checked when sliced); a student set
  fed by two teacher sets (another shortcut layout) is an error naming both."""
  found: dict = {}
  for s_path, t_path in sources.items():
    for axis, (s_set, t_set) in enumerate(zip(s_sets[s_path], t_sets[t_path])):
      if (s_set is None) != (t_set is None):
        raise InputError(f"channels: {s_path} and its source {t_path} disagree on which axes "
                         "are channels")
      if s_set is None:
        continue
      first = found.setdefault(s_set, (t_set, s_path, s_shape(s_path)[axis],
                                       t_shape(t_path)[axis]))
      if first[0] != t_set:
        raise InputError(f"channels: student set {s_set!r} comes from teacher sets "
                         f"{first[0]!r} (at {first[1]}) and {t_set!r} (at {s_path}): the "
                         "student's shortcuts differ from the teacher's")
  return {s: (t, n_s, n_t) for s, (t, _, n_s, n_t) in found.items()}


def _norms(sources: dict, t_sets: dict) -> dict:
  """Teacher set -> the kept teacher batch norms on it (module paths)."""
  out: dict = {}
  for t_path in sorted(set(sources.values())):
    if t_path.endswith("/scale"):
      out.setdefault(t_sets[t_path][0], []).append(t_path[:-len("/scale")])
  return out


@STRATEGIES.register("channels")
def channels(teacher: Partition, student: Partition, context: Optional[Context] = None, *,
             layers: Optional[Sequence[int]] = None, importance: str = "weight") -> tuple:
  context = context or Context()
  if importance not in ("weight", "activation"):
    raise InputError(f"channels importance {importance!r}: use 'weight' or 'activation'")
  t_flat, s_flat = _flat(teacher, "teacher"), _flat(student, "student")
  t_stages, s_stages = _stage_sizes(t_flat), _stage_sizes(s_flat)
  plan = plan_layers(sum(t_stages), sum(s_stages),
                     layers if layers else stage_layers(t_stages, s_stages))
  sources = _sources(teacher, student, plan)
  value = lambda parts, flat, path: np.asarray(parts.groups[flat[path][0]][flat[path][1]])
  t_sets, s_sets = channel_sets(t_flat), channel_sets(s_flat)
  set_map = _set_map(sources, s_sets, t_sets, lambda p: np.shape(value(student, s_flat, p)),
                     lambda p: np.shape(value(teacher, t_flat, p)))
  norms = _norms(sources, t_sets)
  narrowed = {s for s, (_, n_s, n_t) in set_map.items() if n_s < n_t}
  wider = sorted(s for s, (_, n_s, n_t) in set_map.items() if n_s > n_t)
  if wider:
    raise InputError(f"channels: the student's channel set(s) {wider} are wider than the "
                     f"teacher's ({[set_map[s][1:] for s in wider]})")
  if importance == "activation" and narrowed:
    wanted = {m: ("output", 0) for s in narrowed for m in norms.get(set_map[s][0], [])}
    stats = activation_stats(context, wanted)
    score = {s: sum(stats[m] for m in norms.get(set_map[s][0], [])) for s in narrowed}
  else:
    score = {s: sum(np.abs(value(teacher, t_flat, m + "/scale"))
                    for m in norms.get(set_map[s][0], [])) for s in narrowed}
  no_norm = sorted(s for s in narrowed if np.ndim(score[s]) == 0)
  if no_norm:
    raise InputError(f"channels: no kept batch norm on channel set(s) {no_norm} to rank them")
  keep = {s: np.sort(np.argsort(-score[s], kind="stable")[:set_map[s][1]]) for s in narrowed}
  groups: dict = {g: {} for g in student.groups}
  reused = set()
  for s_path, t_path in sources.items():
    x = value(teacher, t_flat, t_path)
    for axis, s_set in enumerate(s_sets[s_path]):
      if s_set in keep:
        x = np.take(x, keep[s_set], axis=axis)
    target = value(student, s_flat, s_path)
    if x.shape != target.shape:
      raise InputError(f"channels: student {s_path} has shape {target.shape} but the teacher's "
                       f"{t_path} sliced to its channel sets has {x.shape}")
    group, key = s_flat[s_path]
    groups[group][key] = x
    reused.add((group, key))
  kept = {s: f"{set_map[s][1]}/{set_map[s][2]}" for s in sorted(narrowed)}
  return groups, reused, {"teacher_layers": plan, "importance": importance, "channels": kept}
