"""Where a block's parameters and activations come from: the teacher's layers grouped into
blocks, its parameters in the stitched layout, and its hidden states at block boundaries
(computed on the fly, per batch, or once and cached under a key of what defines them).
"""
import dataclasses
from typing import Any, Optional, Sequence

import jax
import numpy as np

from distill_jax import models
from distill_jax.errors import InputError
from distill_jax.models.stack import STACKS, Stitched, StackView, frozen_base, resolve
from distill_jax.recombine.strategies import consecutive_blocks
from distill_jax.tasks import TaskData


@dataclasses.dataclass(frozen=True)
class Teacher:
  """The teacher seen as a stack: its family's view, base fields (the data's resolved in),
  params and fingerprint."""
  family: str
  view: StackView
  base: dict
  params: Any
  id: str

  @property
  def depth(self) -> int:
    return self.view.num_layers(self.base)


def teacher_stack(teacher, params: Any, info: dict, teacher_id: str) -> Teacher:
  """``teacher`` (a ``models.Model``) as a :class:`Teacher`; its family must have a stack view."""
  if teacher.name not in STACKS.names():
    raise InputError(f"blockwise training needs a stack view of the teacher's family "
                     f"{teacher.name!r}; families with one: {STACKS.names()} "
                     "(distill_jax/models/stack.py: register one)")
  return Teacher(teacher.name, STACKS.get(teacher.name), resolve(teacher.name, teacher.config,
                                                                 info), params, teacher_id)


def groups(blocks: Sequence[Sequence[int]], depth: int, num_blocks: int) -> list[tuple]:
  """The teacher's layers of each student block: ``blocks`` as given (each layer exactly once,
  consecutive, in order) or, when empty, ``depth`` layers split into ``num_blocks`` runs."""
  if not blocks:
    return [tuple(g) for g in consecutive_blocks(depth, num_blocks)]
  flat = [i for g in blocks for i in g]
  if flat != list(range(depth)) or any(len(g) == 0 for g in blocks):
    raise InputError(f"student.init.blockwise.blocks={[list(g) for g in blocks]}: the blocks "
                     f"must cover the teacher's layers 0..{depth - 1} once each, in order, "
                     "none empty")
  if len(blocks) != num_blocks:
    raise InputError(f"student.init.blockwise.blocks has {len(blocks)} blocks; the student "
                     f"(student.model.blocks) has {num_blocks}")
  return [tuple(g) for g in blocks]


def _get(tree: Any, path: tuple) -> Any:
  for p in path:
    if p not in tree:
      raise InputError(f"the teacher has no parameters at {'/'.join(path)!r}")
    tree = tree[p]
  return tree


def stem_and_head(t: Teacher) -> dict:
  """The teacher's stem and head parameters under the stitched model's names."""
  out = {name: _get(t.params, (name,)) for name in t.view.stem_names}
  out.update({mine: _get(t.params, (theirs,)) for mine, theirs in t.view.head_names(t.base)
              .items()})
  return out


def layer_params(t: Teacher, i: int) -> Any:
  return _get(t.params, t.view.layer_path(i))


def kept(t: Teacher, group: Sequence[int]) -> dict:
  """The parameters of a ``keep`` block: the teacher's layers of ``group``."""
  return {f"layer_{k}": layer_params(t, i) for k, i in enumerate(group)}


def as_stitched(t: Teacher, block_groups: Sequence[Sequence[int]], head: bool = True) -> tuple:
  """``(module, params)``: the teacher itself as a stitched model whose blocks are kept."""
  module = Stitched(t.family, frozen_base(t.base), ("keep",) * len(block_groups),
                    tuple(tuple(g) for g in block_groups))
  params = {f"block_{j}": kept(t, g) for j, g in enumerate(block_groups)}
  params.update(stem_and_head(t) if head else {n: _get(t.params, (n,))
                                               for n in t.view.stem_names})
  return module, params


def boundary_fn(t: Teacher, block_groups: Sequence[Sequence[int]], j: int):
  """Jitted ``(params, batch) -> (h entering block j, h leaving it)`` of the teacher, and the
  params it takes (the stem and the layers up to block j's end)."""
  module, params = as_stitched(t, block_groups[:j + 1], head=False)
  inputs = t.view.inputs

  def fn(p, batch):
    seen = module.apply({"params": p}, *[batch[k] for k in inputs], boundaries=True)
    return jax.lax.stop_gradient(seen[j]), jax.lax.stop_gradient(seen[j + 1])
  return jax.jit(fn), params


def block_data(data: TaskData, t: Teacher, block_groups: Sequence[Sequence[int]], j: int,
               cache_dir: Optional[str] = None, batch_size: int = 256) -> TaskData:
  """The data block ``j`` trains on: ``block_in``, ``block_out`` (the teacher's hidden states
  at the block's two ends) and the context keys its layers read. On the fly (the teacher's
  prefix runs on each batch) unless ``cache_dir``: then computed once for every training
  example and kept there, keyed by the teacher, the data and the block (a stale cache is
  rebuilt; see teacher_cache.py)."""
  fn, params = boundary_fn(t, block_groups, j)
  context = {k: data.train[k] for k in t.view.context_keys}

  def add(batch: dict) -> dict:
    h_in, h_out = fn(params, batch)
    return {"block_in": h_in, "block_out": h_out,
            **{k: batch[k] for k in t.view.context_keys}}

  example = add(data.prepare(dict(data.example)))
  identity = dict(data.identity, block=j, block_groups=[list(g) for g in block_groups],
                  teacher=t.id)
  if not cache_dir:
    return dataclasses.replace(data, name=f"{data.name}/block_{j}", example=example,
                               identity=identity, mixup_keys=(),
                               prepare=lambda batch: add(data.prepare(batch)))
  from distill_jax import teacher_cache

  def build() -> dict:
    n, parts = data.num_train, {"block_in": [], "block_out": []}
    for start in range(0, n, batch_size):
      h_in, h_out = fn(params, {k: v[start:start + batch_size] for k, v in data.train.items()})
      parts["block_in"].append(np.asarray(h_in))
      parts["block_out"].append(np.asarray(h_out))
    return {k: np.concatenate(v) for k, v in parts.items()}
  arrays = teacher_cache.load_or_build(cache_dir, teacher_cache.cache_key(
      params, data.train, {"block": j, "groups": [list(g) for g in block_groups]}), build)
  return dataclasses.replace(data, name=f"{data.name}/block_{j}", train={**arrays, **context},
                             example={k: v[:2] for k, v in {**arrays, **context}.items()},
                             identity=identity, mixup_keys=(), prepare=lambda batch: batch)


def block_model(t: Teacher, spec: str, group: Sequence[int], info: dict,
                overrides: Optional[dict] = None):
  """The ``<family>_block`` model of one block variant (the student's ``overrides`` of the
  teacher's fields, e.g. its dropout, applied)."""
  return models.build({"name": f"{t.family}_block", "base": {**t.base, **(overrides or {})},
                       "spec": spec, "group": list(group)}, info)


def init_block(t: Teacher, model, group: Sequence[int], example: dict, rng: jax.Array,
               from_teacher: bool) -> dict:
  """A block's starting parameters: fresh, or (``from_teacher``) each layer from the teacher
  layer it is shaped like, a narrower one from that layer's leading rows and columns."""
  from distill_jax.models.stack import block_layers
  fresh = model.init(rng, example)
  if not from_teacher:
    return fresh
  layers = block_layers(t.view, t.base, model.config["spec"], group)
  out = {}
  for k, (i, _) in enumerate(layers):
    out[f"layer_{k}"] = jax.tree.map(fit_shape, layer_params(t, i), fresh["block"][f"layer_{k}"])
  return {"block": out}


def fit_shape(teacher_leaf: Any, fresh_leaf: Any) -> np.ndarray:
  """The teacher's values where the shapes overlap (leading indices), fresh ones elsewhere."""
  out = np.array(fresh_leaf, copy=True)
  t = np.asarray(teacher_leaf)
  if t.ndim != out.ndim:
    raise InputError(f"a block layer's parameter has shape {out.shape}; the teacher layer it "
                     f"starts from has {t.shape}")
  region = tuple(slice(0, min(a, b)) for a, b in zip(t.shape, out.shape))
  out[region] = t[region]
  return out
