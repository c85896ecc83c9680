"""A model seen as a stack: a stem, layers, a head. Blockwise training and stitching build on
this view: a *block* is a run of consecutive teacher layers, a student replaces each block with
a variant of its own (fewer layers, narrower layers, the teacher's layers kept, or nothing),
and a linear *stitch* may join two blocks.

A family opts in by registering a :class:`StackView` (MLP, BERT and Llama do below). Two model
families are then registered for it: ``<family>_stitched`` (stem, blocks ``block_{j}/layer_{i}``,
optional stitches ``stitch_{j}``, head; the stem and head parameters named as the family's) and
``<family>_block`` (one block alone: reads ``block_in`` and the context keys, outputs
``hidden``).

A block is written as a string: ``keep`` (the teacher's layers of the block), ``drop`` (none:
the block's output is its input), or ``layers=N[,key=value...]`` (N layers of the family's
kind, with config fields overridden, e.g. ``layers=1,intermediate_size=768``; an MLP's
``width=W`` sets its inner layers' width).
"""
import dataclasses
from typing import Any, Callable, Mapping, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from distill_jax.errors import InputError
from distill_jax.models import MODELS, Family
from distill_jax.models import bert as bert_lib
from distill_jax.models import llama as llama_lib
from distill_jax.registry import Registry


@dataclasses.dataclass(frozen=True)
class StackView:
  """How one family's model splits into stem, layers and head (all inside a compact scope)."""
  inputs: tuple[str, ...]                      # the family's batch keys
  num_layers: Callable[[dict], int]            # base fields -> teacher depth
  width: Callable[[dict, int], int]            # hidden width after teacher layer i
  stem: Callable[[dict, dict, bool], tuple]    # (base, inputs, train) -> (h, shared)
  context: Callable[[dict, dict, Any], Any]    # (base, batch, h) -> what layers read besides h
  layer: Callable[[dict, int, dict, str], nn.Module]   # (base, teacher index, overrides, name)
  call: Callable[[nn.Module, Any, Any, bool], Any]     # (layer, h, context, train) -> h
  head: Callable[[dict, Any, Any, bool], Any]  # (base, h, shared, train) -> the family's output
  layer_path: Callable[[int], tuple]           # teacher params path of layer i
  stem_names: tuple[str, ...]                  # top-level params the stem uses (same names)
  head_names: Callable[[dict], dict]           # {stitched name: teacher name} of the head
  # (base, [(teacher index, overrides) per layer]) -> the family's own fields for that stack
  # of layers, or None when the family cannot express it (e.g. layers of different widths)
  plain: Callable[[dict, list], Optional[dict]] = lambda base, layers: None
  context_keys: tuple[str, ...] = ()           # batch keys a lone block reads besides block_in
  mask_key: str = ""                           # batch key of the token mask (token-level h)


STACKS: Registry[StackView] = Registry("stack view")


def parse_block(spec: str) -> tuple[str, int, dict]:
  """``"keep"`` / ``"drop"`` / ``"layers=N[,k=v...]"`` -> ``(kind, layers, overrides)``."""
  if spec in ("keep", "drop"):
    return spec, 0, {}
  parts = dict(p.split("=", 1) if "=" in p else (p, "") for p in spec.split(","))
  try:
    layers = int(parts.pop("layers"))
    overrides = {k: int(v) for k, v in parts.items()}
  except (KeyError, ValueError):
    raise InputError(f"block {spec!r}: use 'keep', 'drop' or 'layers=N[,field=int...]' "
                     "(e.g. 'layers=1,intermediate_size=768')") from None
  if layers < 1:
    raise InputError(f"block {spec!r}: layers must be >= 1 (use 'drop' for none)")
  return "layers", layers, overrides


def block_layers(view: StackView, base: dict, spec: str,
                 group: Sequence[int]) -> list[tuple[int, dict]]:
  """The block's layers as ``(teacher layer index it is shaped and initialised like,
  overrides)``; the last layer ends at the block's output width."""
  kind, n, overrides = parse_block(spec)
  if kind == "keep":
    return [(i, {}) for i in group]
  if kind == "drop":
    return []
  picks = [group[min(k, len(group) - 1)] for k in range(n - 1)] + [group[-1]]
  width = overrides.pop("width", None)
  return [(i, dict(overrides, **({"width": width} if width and k < n - 1 else {})))
          for k, i in enumerate(picks)]


class Blocks(nn.Module):
  """One block: its layers ``layer_{i}`` applied in order (none for ``drop``)."""
  family: str
  base: tuple
  spec: str
  group: tuple

  @nn.compact
  def __call__(self, h, ctx, train: bool = False):
    view, base = STACKS.get(self.family), dict(self.base)
    for k, (i, overrides) in enumerate(block_layers(view, base, self.spec, self.group)):
      h = view.call(view.layer(base, i, overrides, f"layer_{k}"), h, ctx, train)
    return h


class Stitched(nn.Module):
  """stem -> block_0 [-> stitch_0] -> block_1 ... -> head. ``boundaries=True``: the hidden
  states entering each block and leaving the last one (no head). ``bases`` (optional, one per
  block; empty: ``base``) lets blocks come from models of other widths (model stitching); the
  head then follows the last block's base, and a stitch maps to the width the next block
  expects."""
  family: str
  base: tuple
  blocks: tuple
  groups: tuple
  stitch: tuple = ()
  bases: tuple = ()

  def base_of(self, j: int) -> tuple:
    return self.bases[j] if j < len(self.bases) and self.bases[j] else self.base

  @nn.compact
  def __call__(self, *inputs, train: bool = False, boundaries: bool = False):
    view, base = STACKS.get(self.family), dict(self.base)
    batch = dict(zip(view.inputs, inputs))
    h, shared = view.stem(base, batch, train)
    ctx = view.context(base, batch, h)
    seen = [h]
    for j, spec in enumerate(self.blocks):
      h = Blocks(self.family, self.base_of(j), spec, tuple(self.groups[j]), name=f"block_{j}")(
          h, ctx, train)
      if j < len(self.stitch) and self.stitch[j]:
        nxt = self.groups[j + 1][0] if j + 1 < len(self.groups) else None
        width = (view.width(dict(self.base_of(j + 1)), nxt - 1) if nxt else h.shape[-1])
        h = nn.Dense(width, name=f"stitch_{j}")(h)
      seen.append(h)
    if boundaries:
      return seen
    return view.head(dict(self.base_of(len(self.blocks) - 1)), h, shared, train)


class Block(nn.Module):
  """One block alone, on the hidden state ``block_in`` (and the context keys)."""
  family: str
  base: tuple
  spec: str
  group: tuple

  @nn.compact
  def __call__(self, block_in, *context, train: bool = False):
    view, base = STACKS.get(self.family), dict(self.base)
    ctx = view.context(base, dict(zip(view.context_keys, context)), block_in)
    return Blocks(self.family, self.base, self.spec, self.group, name="block")(
        block_in, ctx, train)


def frozen_base(fields: Mapping[str, Any]) -> tuple:
  """A base config as a hashable linen field (sorted items, lists as tuples)."""
  return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in fields.items()))


def _lists(v: Any) -> Any:
  return [_lists(x) for x in v] if isinstance(v, (list, tuple)) else v


def _stitched_family(name: str, view: StackView, family: Family) -> Family:
  def make(fields: dict, info: Mapping[str, Any]):
    known = {"base", "blocks", "groups", "stitch", "bases"}
    if set(fields) - known or not {"base", "blocks", "groups"} <= set(fields):
      raise InputError(f"model {name}_stitched takes fields {sorted(known)} (base, blocks and "
                       f"groups required); got {sorted(fields)}")
    if len(fields["groups"]) != len(fields["blocks"]):
      raise InputError(f"model {name}_stitched: {len(fields['blocks'])} blocks but "
                       f"{len(fields['groups'])} teacher layer groups")
    for spec in fields["blocks"]:
      parse_block(spec)
    return Stitched(name, frozen_base(resolve(name, fields["base"], info)),
                    tuple(fields["blocks"]), tuple(tuple(g) for g in fields["groups"]),
                    tuple(bool(s) for s in fields.get("stitch", ())),
                    tuple(frozen_base(resolve(name, b, info)) if b else ()
                          for b in fields.get("bases", ())))

  def fields(m) -> dict:
    out = {"base": unresolve(dict(m.base)), "blocks": list(m.blocks),
           "groups": _lists(m.groups), "stitch": list(m.stitch)}
    if m.bases:
      out["bases"] = [unresolve(dict(b)) if b else None for b in m.bases]
    return out
  return Family(make, inputs=view.inputs, outputs=family.outputs, fields=fields)


def _block_family(name: str, view: StackView) -> Family:
  def make(fields: dict, info: Mapping[str, Any]):
    return Block(name, frozen_base(resolve(name, fields["base"], info)), fields["spec"],
                 tuple(fields["group"]))

  def outputs(h, batch):
    out = {"hidden": h}
    if view.mask_key:
      out["token_mask"] = batch[view.mask_key]
    return out
  return Family(make, inputs=("block_in",) + view.context_keys, outputs=outputs,
                fields=lambda m: {"base": unresolve(dict(m.base)), "spec": m.spec,
                                  "group": list(m.group)})


def resolve(name: str, base: Mapping[str, Any], info: Mapping[str, Any]) -> dict:
  """The base fields plus what the data fixes (an MLP's classes, an LM's vocabulary)."""
  base = {k: v for k, v in dict(base).items() if k != "name"}
  if name == "mlp" and "num_classes" in info:
    base["num_classes"] = int(info["num_classes"])
  if name == "llama" and "vocab_size" in info and "vocab_size" not in base:
    base["vocab_size"] = int(info["vocab_size"])
  return base


def unresolve(base: dict) -> dict:
  return {k: (list(v) if isinstance(v, tuple) else v) for k, v in base.items()
          if k != "num_classes"}


def register(name: str, view: StackView) -> None:
  """Register ``view`` for family ``name`` and the ``<name>_stitched``/``<name>_block`` models."""
  STACKS.register(name)(view)
  MODELS.register(f"{name}_stitched")(_stitched_family(name, view, MODELS.get(name)))
  MODELS.register(f"{name}_block")(_block_family(name, view))


def family_of(model_name: str) -> Optional[str]:
  """``"bert"`` for ``"bert_stitched"`` / ``"bert_block"``; None for other models."""
  for suffix in ("_stitched", "_block"):
    if model_name.endswith(suffix) and model_name[:-len(suffix)] in STACKS.names():
      return model_name[:-len(suffix)]
  return None


def plain(fields: Mapping[str, Any], params: Optional[dict] = None) -> Optional[tuple]:
  """A ``<family>_stitched`` model as the family's own model, when it is one (no stitch, and
  layers the family can express): ``(model config, params in the family's layout)`` (params
  None when not given), else None. Its exports then take the family's standard layout, and
  what needs the family's module (an LM's key/value-cache generation) works."""
  name = family_of(fields["name"])
  if name is None or any(fields.get("stitch", ())) or any(fields.get("bases", ()) or ()):
    return None
  view, base = STACKS.get(name), {k: v for k, v in dict(fields["base"]).items()}
  layers = [layer for spec, group in zip(fields["blocks"], fields["groups"])
            for layer in block_layers(view, base, spec, group)]
  own = view.plain(base, layers)
  if own is None:
    return None
  config = {"name": name, **own}
  if params is None:
    return config, None
  out = {n: params[n] for n in view.stem_names}
  k = 0
  for j, spec in enumerate(fields["blocks"]):
    for i in range(len(block_layers(view, base, spec, fields["groups"][j]))):
      node = out
      for part in view.layer_path(k)[:-1]:
        node = node.setdefault(part, {})
      node[view.layer_path(k)[-1]] = params[f"block_{j}"][f"layer_{i}"]
      k += 1
  out.update({theirs: params[mine] for mine, theirs in view.head_names(own).items()})
  return config, out


def _uniform(base: dict, layers: list) -> Optional[dict]:
  """BERT/Llama: one config for every layer, so all layers must share their overrides."""
  kinds = {tuple(sorted(o.items())) for _, o in layers}
  if len(kinds) > 1:
    return None
  return {**base, **(dict(kinds.pop()) if kinds else {}), "num_layers": len(layers)}


# --- the built-in views --------------------------------------------------------------------

class _ReluDense(nn.Dense):
  """An MLP hidden layer: Dense then ReLU (parameters exactly a ``Dense_{i}``'s)."""

  def __call__(self, x):
    return nn.relu(super().__call__(x))


register("mlp", StackView(
    inputs=("x",),
    num_layers=lambda base: len(base["hidden"]),
    width=lambda base, i: base["hidden"][i],
    stem=lambda base, batch, train: (batch["x"].reshape((batch["x"].shape[0], -1)), None),
    context=lambda base, batch, h: None,
    layer=lambda base, i, o, name: _ReluDense(o.get("width", base["hidden"][i]), name=name),
    call=lambda layer, h, ctx, train: layer(h),
    head=lambda base, h, shared, train: nn.Dense(base["num_classes"], name="head")(h),
    layer_path=lambda i: (f"Dense_{i}",),
    stem_names=(),
    head_names=lambda base: {"head": f"Dense_{len(base['hidden'])}"},
    plain=lambda base, layers: {**base, "hidden": [o.get("width", base["hidden"][i])
                                                   for i, o in layers]}))


def _bert_config(base: dict, overrides: dict) -> bert_lib.BertConfig:
  return bert_lib.BertConfig.from_dict({**base, **overrides})


register("bert", StackView(
    inputs=("input_ids", "attention_mask", "token_type_ids"),
    num_layers=lambda base: _bert_config(base, {}).num_layers,
    width=lambda base, i: _bert_config(base, {}).hidden_size,
    stem=lambda base, batch, train: (bert_lib.BertEmbeddings(
        _bert_config(base, {}), name="embeddings")(batch["input_ids"], batch["token_type_ids"],
                                                    not train), None),
    context=lambda base, batch, h: bert_lib.additive_mask(batch["attention_mask"], jnp.float32),
    layer=lambda base, i, o, name: bert_lib.BertLayer(_bert_config(base, o), name=name),
    call=lambda layer, h, bias, train: layer(h, bias, not train),
    head=lambda base, h, shared, train: bert_lib.BertOutput(last_hidden_state=h, pooled=None),
    layer_path=lambda i: ("encoder", f"layer_{i}"),
    stem_names=("embeddings",),
    head_names=lambda base: {},
    plain=lambda base, layers: dict(_uniform(base, layers) or {}, with_pooler=False)
    if _uniform(base, layers) else None,
    context_keys=("attention_mask",),
    mask_key="attention_mask"))


def _llama_config(base: dict, overrides: dict) -> llama_lib.LlamaConfig:
  return llama_lib.LlamaConfig.from_dict({**base, **overrides})


def _llama_stem(base: dict, batch: dict, train: bool) -> tuple:
  c = _llama_config(base, {})
  embed = nn.Embed(c.vocab_size, c.hidden_size, embedding_init=nn.initializers.normal(0.02),
                   dtype=jnp.dtype(c.dtype), name="embed")
  return embed(batch["tokens"]), embed


def _llama_context(base: dict, batch: dict, h) -> tuple:
  b, length = h.shape[:2]
  return jnp.broadcast_to(jnp.arange(length), (b, length)), jnp.ones((b, length), jnp.int32)


def _llama_head(base: dict, h, embed, train: bool):
  c = _llama_config(base, {})
  h = llama_lib.RMSNorm(c.rms_norm_eps, name="final_norm")(h)
  if c.tie_embeddings:
    if embed is None:
      raise InputError("a tied Llama head needs the stem's embedding")
    return embed.attend(h).astype(jnp.float32)
  return nn.Dense(c.vocab_size, use_bias=False, dtype=jnp.dtype(c.dtype),
                  name="lm_head")(h).astype(jnp.float32)


register("llama", StackView(
    inputs=("tokens",),
    num_layers=lambda base: _llama_config(base, {}).num_layers,
    width=lambda base, i: _llama_config(base, {}).hidden_size,
    stem=_llama_stem,
    context=_llama_context,
    layer=lambda base, i, o, name: llama_lib.Block(_llama_config(base, o), name=name),
    call=lambda layer, h, ctx, train: layer(h, *ctx),
    head=_llama_head,
    layer_path=lambda i: (f"layer_{i}",),
    stem_names=("embed",),
    head_names=lambda base: ({"final_norm": "final_norm"} if base.get("tie_embeddings", True)
                             else {"final_norm": "final_norm", "lm_head": "lm_head"}),
    plain=_uniform))

__all__ = ["STACKS", "StackView", "Stitched", "Block", "register", "parse_block",
           "block_layers", "family_of", "frozen_base", "plain"]
