"""``prune``: a student with fewer layers and/or narrower widths cut out of the teacher,
Minitron-style (Muralidharan et al., 2024, "Compact Language Models via Pruning and Knowledge
Distillation"), for the transformer families (``llama``, ``bert``; ``vit``: MLP neurons only).

Depth: the student's layers are copies of teacher layers (``layers``, ``every`` or evenly, as
``select``). Width, read off the student's shapes against the teacher's: MLP neurons
(``intermediate_size``), attention heads (``num_heads``; Llama's key-value groups:
``num_kv_heads``) and hidden channels (``hidden_size``: one channel set for the whole model,
sliced through embeddings, every layer's input rows and output columns, norms, the final norm
and the head). Each kind keeps its most important units, in the teacher's order. Heads keep the
teacher's head_dim, so the student's ``hidden_size / num_heads`` must equal it.

Importance (``importance=``), on the kept teacher layers:
  ``"activation"`` (label-free, the teacher run on ``context.batch``; padding excluded when the
  batch has an ``attention_mask``): neuron i: mean_t |a_t,i| of the MLP hidden a (Llama
  silu(gate(x)) * up(x), BERT gelu(intermediate(x))); head h: mean_t ||o_t,h||_2 of its
  attention output o (before the output projection); channel c: sum over the kept layers' norms
  of mean_t |n_t,c|, n a norm's output (what the layer's projections read; Minitron's choice).
  ``"weight"``: sqrt of the sum of squares of every weight on the unit's slice (a neuron's
  gate/up/intermediate columns, biases and down/output rows; a head's query columns and output
  rows; a channel's slice of every kept array).
"""
import re
from typing import Optional, Sequence

import flax.linen as nn
import numpy as np

from distill_jax.errors import InputError
from distill_jax.partition import Partition
from distill_jax.recombine.context import Context
from distill_jax.recombine.strategies import STRATEGIES, layer_groups, plan_layers

# The config field each prunable kind of axis comes from (for the error messages).
FIELDS = {"hidden": "hidden_size", "neurons": "intermediate_size", "q": "num_heads",
          "kv": "num_kv_heads"}

# Parameter key (its last path components) -> the kind of each axis; first match wins. "q":
# query-head columns (heads x head_dim), "kv": key/value-head columns; None: never pruned
# (vocabulary, positions).
ROLES = ((r"attention/query/kernel", ("hidden", "q")), (r"attention/query/bias", ("q",)),
         (r"attention/(key|value)/kernel", ("hidden", "kv")),
         (r"attention/(key|value)/bias", ("kv",)),
         (r"attention/output/kernel", ("q", "hidden")), (r"attention/output/bias", ("hidden",)),
         (r"mlp/(gate|up)/kernel", ("hidden", "neurons")),
         (r"mlp/down/kernel", ("neurons", "hidden")),
         (r"intermediate/kernel", ("hidden", "neurons")), (r"intermediate/bias", ("neurons",)),
         # ViT (models/vit.py): its MLP's two Dense layers (its heads split the hidden width,
         # and its patch and position embeddings have no role here: neurons only)
         (r"mlp/dense_0/kernel", ("hidden", "neurons")), (r"mlp/dense_0/bias", ("neurons",)),
         (r"mlp/dense_1/kernel", ("neurons", "hidden")),
         (r"output/kernel", ("neurons", "hidden")), (r"output/bias", ("hidden",)),
         (r"[^/]*norm/(scale|bias)", ("hidden",)), (r"embedding", (None, "hidden")),
         (r"lm_head/kernel", ("hidden", None)),
         (r"pooler/kernel", ("hidden", "hidden")), (r"pooler/bias", ("hidden",)))
_ROLES = [(re.compile(rf"(?:^|/){p}$"), kinds) for p, kinds in ROLES]
_NORM = re.compile(r"(?:^|/)[^/]*norm/scale$")


def axis_kinds(key: str, ndim: int) -> tuple:
  """The kind of each axis of the parameter ``key`` (all None for an unknown one: copied)."""
  for pattern, kinds in _ROLES:
    if pattern.search(key) and len(kinds) == ndim:
      return kinds
  return (None,) * ndim


def _top(score: np.ndarray, k: int) -> np.ndarray:
  """The ``k`` highest-scoring indices, in increasing order (ties: the lower index)."""
  return np.sort(np.argsort(-score, kind="stable")[:k])


def _sizes(teacher: Partition, student: Partition, pairs: list) -> dict:
  """``{(scope, kind): (teacher size, student size)}``; scope ``""`` for the model-wide hidden
  channels, the student layer for the rest. Every axis is checked against the teacher's."""
  sizes: dict = {}
  for s_group, t_group in pairs:
    t_members = teacher.groups[t_group]
    for key, target in student.groups[s_group].items():
      if key not in t_members:
        raise InputError(f"prune: student {s_group}:{key} has no teacher array in {t_group} "
                         f"(teacher keys: {sorted(t_members)})")
      t_shape, s_shape = np.shape(t_members[key]), np.shape(target)
      where = f"student {s_group}:{key} {s_shape} vs teacher {t_group}:{key} {t_shape}"
      if len(t_shape) != len(s_shape):
        raise InputError(f"prune: {where}: different ranks")
      for axis, kind in enumerate(axis_kinds(key, len(s_shape))):
        t, s = t_shape[axis], s_shape[axis]
        if kind is None and t != s:
          raise InputError(f"prune: {where}: axis {axis} differs and cannot be pruned")
        if kind is None:
          continue
        if s > t:
          raise InputError(f"prune: {where}: the student is wider than the teacher on axis "
                           f"{axis} ({FIELDS[kind]}: {s} > {t}); pruning only narrows")
        scope = "" if kind == "hidden" else s_group
        if sizes.setdefault((scope, kind), (t, s)) != (t, s):
          raise InputError(f"prune: {where}: axis {axis} ({FIELDS[kind]}) is {t} -> {s}, but "
                           f"other arrays say {sizes[(scope, kind)][0]} -> "
                           f"{sizes[(scope, kind)][1]}")
  return sizes


def _head_dim(sizes: dict, context: Context, head_dim: Optional[int],
              num_heads: Optional[int]) -> Optional[int]:
  """The teacher's head_dim (``head_dim`` option or the teacher's config), checked against the
  student's attention width when heads or channels are pruned; None when no head is cut."""
  cfg = getattr(context.teacher, "config", None) or {}
  if not head_dim and "num_heads" in cfg and "hidden_size" in cfg:
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_heads"]
  cut = [(scope, t, s) for (scope, kind), (t, s) in sizes.items() if kind in ("q", "kv")
         and t != s]
  if not cut:
    return head_dim
  if not head_dim:
    raise InputError("prune: cutting attention heads needs the teacher's head_dim: give the "
                     "context the teacher model, or the option head_dim")
  for scope, t, s in cut:
    if t % head_dim or s % head_dim:
      raise InputError(f"prune: {scope}: attention width {t} -> {s} is not a multiple of the "
                       f"teacher's head_dim {head_dim}; a pruned student keeps it, so its "
                       f"hidden_size must be num_heads x {head_dim}")
  # A student's head_dim is hidden_size // num_heads, which its shapes do not show (query
  # columns = hidden_size whatever num_heads is): confirm num_heads, else a student with the
  # teacher's num_heads and a narrower hidden_size would silently mix up its heads.
  width = [s for (_, kind), (t, s) in sizes.items() if kind == "q"]
  if width and num_heads is None:
    raise InputError(f"prune: the student's attention is {width[0]} wide, i.e. "
                     f"{width[0] // head_dim} heads of the teacher's head_dim {head_dim}; pass "
                     f"num_heads=<the student's num_heads> to confirm it")
  if width and num_heads * head_dim != width[0]:
    raise InputError(f"prune: the student's num_heads {num_heads} gives head_dim "
                     f"{width[0] / num_heads:g}, but pruning keeps the teacher's {head_dim}: set "
                     f"the student's num_heads to {width[0] // head_dim} (hidden_size "
                     f"{width[0]} / {head_dim})")
  return head_dim


def _weight_sq(members: dict, kind: str) -> np.ndarray:
  """Per unit of ``kind``: the sum of squares of every weight on its slice of ``members``."""
  total = 0.0
  for key, value in members.items():
    value = np.asarray(value, np.float64)
    for axis, k in enumerate(axis_kinds(key, value.ndim)):
      if k == kind:
        total = total + (np.moveaxis(value, axis, 0).reshape(value.shape[axis], -1) ** 2).sum(1)
  return total


def activation_stats(context: Context, wanted: dict) -> dict:
  """Run the teacher on ``context.batch``; for each module path in ``wanted`` (-> ``(where,
  head_dim)``, where "input" or "output"), the token mean of |x| per feature of its ``__call__``
  input or output, or with a head_dim of ||x_head||_2 per head. Method interception reads the
  modules' inputs without touching the model code."""
  if not context.has_data:
    raise InputError("prune importance 'activation' needs calibration data: the context has "
                     "no teacher or batch; use importance='weight'")
  mask = context.batch.get("attention_mask")
  stats = {}

  def token_mean(x):   # (..., d) -> (d,): over the real tokens when the batch has a mask
    if mask is not None and x.shape[:-1] == np.shape(mask):
      w = np.asarray(mask, np.float64)[..., None]
      return (x * w).reshape(-1, x.shape[-1]).sum(0) / max(w.sum(), 1.0)
    return x.reshape(-1, x.shape[-1]).mean(0)

  def intercept(next_fun, args, kwargs, ctx):
    out = next_fun(*args, **kwargs)
    path = "/".join(ctx.module.path)
    if ctx.method_name == "__call__" and path in wanted:
      where, hd = wanted[path]
      x = np.asarray(args[0] if where == "input" else out, np.float64)
      x = np.linalg.norm(x.reshape(x.shape[:-1] + (-1, hd)), axis=-1) if hd else np.abs(x)
      stats[path] = token_mean(x)
    return out

  with nn.intercept_methods(intercept):
    context.teacher.apply(context.teacher_params, context.batch)
  missing = sorted(set(wanted) - set(stats))
  if missing:
    raise InputError(f"prune: the teacher never called module(s) {missing} on the batch")
  return stats


def _scores(teacher: Partition, pairs: list, layer_pairs: list, need: set, importance: str,
            context: Context, hd: Optional[int]) -> dict:
  """Importance of every unit of each kind in ``need`` (``{(scope, kind)}``)."""
  if importance == "weight":
    out = {}
    for scope, kind in need:
      if kind == "hidden":
        out[(scope, kind)] = np.sqrt(sum(_weight_sq(teacher.groups[t], "hidden")
                                         for _, t in pairs))
      else:
        sq = _weight_sq(teacher.groups[dict(pairs)[scope]], kind)
        out[(scope, kind)] = np.sqrt(sq.reshape(-1, hd).sum(1) if kind == "q" else sq)
    return out
  module = {(c.group, c.key): c.path.rsplit("/", 1)[0] for c in teacher.claims}
  wanted, uses = {}, {}   # module path -> (where, head_dim); (scope, kind) -> module paths
  for s_group, t_group in layer_pairs:
    for key, value in teacher.groups[t_group].items():
      kinds = axis_kinds(key, np.ndim(value))
      for kind, hit, where in (("neurons", kinds == ("neurons", "hidden"), "input"),
                               ("q", kinds == ("q", "hidden"), "input"),
                               ("hidden", _NORM.search(key) is not None, "output")):
        scope = "" if kind == "hidden" else s_group
        if hit and (scope, kind) in need:
          wanted[module[(t_group, key)]] = (where, hd if kind == "q" else 0)
          uses.setdefault((scope, kind), []).append(module[(t_group, key)])
  absent = sorted(set(need) - set(uses))
  if absent:
    raise InputError(f"prune: no module to measure {[FIELDS[k] for _, k in absent]} "
                     f"activations in the kept teacher layers")
  stats = activation_stats(context, wanted) if wanted else {}
  return {key: sum(stats[p] for p in paths) for key, paths in uses.items()}


def select_heads(score: np.ndarray, t_q: int, t_kv: int, s_q: int, s_kv: int,
                  where: str) -> tuple[np.ndarray, np.ndarray]:
  """(query heads, key-value groups) to keep. Query head h is in group h // (t_q / t_kv): each
  kept group keeps its best s_q / s_kv query heads; groups rank by the sum of those heads'
  scores. BERT is the case t_kv = t_q (every head its own group)."""
  g_t, g_s = t_q // t_kv, s_q // max(s_kv, 1)
  if not s_kv or s_q % s_kv or g_s > g_t:
    raise InputError(f"prune: {where}: the student's {s_q} query heads in {s_kv} key-value "
                     f"groups do not fit the teacher's groups of {g_t} (num_heads / "
                     f"num_kv_heads must divide and not exceed the teacher's)")
  per_group = score.reshape(t_kv, g_t)
  within = np.sort(np.argsort(-per_group, axis=1, kind="stable")[:, :g_s], axis=1)
  groups = _top(np.take_along_axis(per_group, within, 1).sum(1), s_kv)
  return (groups[:, None] * g_t + within[groups]).ravel(), groups


@STRATEGIES.register("prune")
def prune(teacher: Partition, student: Partition, context: Optional[Context] = None, *,
          layers: Optional[Sequence[int]] = None, every: int = 0,
          importance: str = "activation", head_dim: Optional[int] = None,
          num_heads: Optional[int] = None) -> tuple:
  """Student layer j is teacher layer ``plan[j]`` (see ``plan_layers``) cut to the student's
  widths by keeping the most important neurons, heads and hidden channels (module docstring).
  ``head_dim``: the teacher's (default: from ``context.teacher``'s config); ``num_heads``: the
  student's, required when heads are cut (its shapes cannot tell it)."""
  context = context or Context()
  if importance not in ("activation", "weight"):
    raise InputError(f"prune importance {importance!r}: use 'activation' or 'weight'")
  t_names, s_names = layer_groups(teacher), layer_groups(student)
  if not s_names:
    raise InputError(f"the student partition has no layer_<i> groups (groups: {student.names})")
  plan = plan_layers(len(t_names), len(s_names), layers, every)
  layer_pairs = [(s, t_names[i]) for s, i in zip(s_names, plan)]
  pairs = list(layer_pairs)
  for name in student.groups:
    if name not in s_names:
      if name not in teacher.groups:
        raise InputError(f"student group {name!r} has no teacher group of that name "
                         f"(teacher groups: {teacher.names})")
      pairs.append((name, name))
  sizes = _sizes(teacher, student, pairs)
  if num_heads is None:     # the student's own config says it, when the context has it
    num_heads = (getattr(context.student, "config", None) or {}).get("num_heads")
  hd = _head_dim(sizes, context, head_dim, num_heads)

  # Kept indices per (scope, kind) along each prunable axis; heads as their columns.
  cut = {key for key, (t, s) in sizes.items() if s < t}
  need = {(scope, "q" if kind == "kv" else kind) for scope, kind in cut}
  scores = _scores(teacher, pairs, layer_pairs, need, importance, context, hd)
  index = {key: _top(scores[key], s) for key, (t, s) in sizes.items()
           if key in cut and key[1] in ("hidden", "neurons")}
  for s_group, _ in layer_pairs:
    if (s_group, "q") in need:
      (t_q, s_q), (t_kv, s_kv) = sizes[(s_group, "q")], sizes[(s_group, "kv")]
      heads, kv = select_heads(scores[(s_group, "q")], t_q // hd, t_kv // hd, s_q // hd,
                                s_kv // hd, s_group)
      index[(s_group, "q")] = (heads[:, None] * hd + np.arange(hd)).ravel()
      index[(s_group, "kv")] = (kv[:, None] * hd + np.arange(hd)).ravel()

  groups, reused = {}, set()
  for s_group, t_group in pairs:
    new = {}
    for key, target in student.groups[s_group].items():
      value = np.asarray(teacher.groups[t_group][key])
      for axis, kind in enumerate(axis_kinds(key, value.ndim)):
        idx = index.get(("" if kind == "hidden" else s_group, kind))
        if idx is not None:
          value = np.take(value, idx, axis=axis)
      if value.shape != np.shape(target):   # a bug, not the user's: _sizes checked the shapes
        raise AssertionError(f"prune: {s_group}/{key} sliced to {value.shape}, "
                             f"expected {np.shape(target)}")
      new[key] = value
      reused.add((s_group, key))
    groups[s_group] = new

  kept = {FIELDS["hidden"]: sizes[("", "hidden")][1]} if ("", "hidden") in sizes else {}
  for kind, name in (("q", "num_heads"), ("kv", "num_kv_heads"),
                     ("neurons", "intermediate_size")):
    per_layer = {s: sizes[(s, kind)][1] // (hd if kind in ("q", "kv") else 1)
                 for s, _ in layer_pairs if (s, kind) in sizes and (hd or kind == "neurons")}
    if per_layer:
      kept[name] = per_layer
  return groups, reused, {"teacher_layers": plan, "importance": importance, "kept": kept}
