"""HuggingFace BERT safetensors <-> :class:`~distill_jax.models.bert.BertEncoder` parameters.

Names map one to one (see :mod:`distill_jax.models.bert` for the Flax paths); PyTorch Linear
weights are (out, in) and are transposed to Flax's (in, out). Import then export gives the
same tensor names and bit-identical tensors:

- the pooler is kept (``with_pooler``) when the file has one, so it survives the round trip,
  although sentence embeddings never use it; a file without one imports with
  ``with_pooler=False``;
- the ``embeddings.position_ids`` buffer (``arange(max_position)``, int64) is checked on
  import, not stored in the params, and written back on export (``position_ids=True``).

Exported layers are renumbered 0..n-1 in index order, so a student built from a subset of a
teacher's ``layer_{i}`` blocks exports as a plain n-layer BERT.
"""
import json
import os
import re
from typing import Any, Mapping, Optional

import jax
import numpy as np

from distill_jax.models.bert import BertConfig, bert_config_from_hf, bert_config_to_hf, init_params
from distill_jax.paths import flatten, unflatten

POSITION_IDS = "embeddings.position_ids"

# HF module -> Flax module, outside the layers and inside ``encoder.layer.{i}.``.
_TOP = {"embeddings.word_embeddings": "embeddings/word_embeddings",
        "embeddings.position_embeddings": "embeddings/position_embeddings",
        "embeddings.token_type_embeddings": "embeddings/token_type_embeddings",
        "embeddings.LayerNorm": "embeddings/layer_norm",
        "pooler.dense": "pooler"}
_LAYER = {"attention.self.query": "attention/query",
          "attention.self.key": "attention/key",
          "attention.self.value": "attention/value",
          "attention.output.dense": "attention/output",
          "attention.output.LayerNorm": "attention/layer_norm",
          "intermediate.dense": "intermediate",
          "output.dense": "output",
          "output.LayerNorm": "output_layer_norm"}
_HF_LAYER = re.compile(r"encoder\.layer\.(\d+)\.(.+)")
_FLAX_LAYER = re.compile(r"encoder/layer_(\d+)/(.+)")


def _leaf_to_flax(module: str, leaf: str) -> Optional[str]:
  """HF parameter leaf -> Flax leaf, by the kind of module (Embedding, LayerNorm, Linear)."""
  if module.endswith("embeddings"):
    return {"weight": "embedding"}.get(leaf)
  if module.endswith("layer_norm"):
    return {"weight": "scale", "bias": "bias"}.get(leaf)
  return {"weight": "kernel", "bias": "bias"}.get(leaf)


def hf_to_flax_name(name: str) -> tuple[str, bool]:
  """``encoder.layer.3.attention.self.query.weight`` -> (``encoder/layer_3/attention/query/
  kernel``, transpose?). ValueError for a name this port does not know."""
  module, _, leaf = name.rpartition(".")
  layer = _HF_LAYER.fullmatch(module)
  if layer and layer.group(2) in _LAYER:
    flax_module = f"encoder/layer_{int(layer.group(1))}/{_LAYER[layer.group(2)]}"
  elif module in _TOP:
    flax_module = _TOP[module]
  else:
    raise ValueError(f"unknown tensor {name!r}: not a BERT parameter this port maps")
  flax_leaf = _leaf_to_flax(flax_module, leaf)
  if flax_leaf is None:
    raise ValueError(f"unknown tensor {name!r}: {module!r} has no parameter {leaf!r}")
  return f"{flax_module}/{flax_leaf}", flax_leaf == "kernel"


def flax_to_hf_name(path: str, layer_index: Optional[int] = None) -> tuple[str, bool]:
  """Inverse of :func:`hf_to_flax_name`; ``layer_index`` renumbers ``encoder/layer_{i}``."""
  module, _, leaf = path.rpartition("/")
  layer = _FLAX_LAYER.fullmatch(module)
  inverse_layer = {v: k for k, v in _LAYER.items()}
  inverse_top = {v: k for k, v in _TOP.items()}
  if layer and layer.group(2) in inverse_layer:
    index = int(layer.group(1)) if layer_index is None else layer_index
    hf_module = f"encoder.layer.{index}.{inverse_layer[layer.group(2)]}"
  elif module in inverse_top:
    hf_module = inverse_top[module]
  else:
    raise ValueError(f"unknown parameter {path!r}: not a BertEncoder parameter")
  inverse_leaf = {"embedding": "weight", "scale": "weight", "kernel": "weight", "bias": "bias"}
  if leaf not in inverse_leaf or _leaf_to_flax(module, inverse_leaf[leaf]) != leaf:
    raise ValueError(f"unknown parameter {path!r}: {module!r} has no parameter {leaf!r}")
  return f"{hf_module}.{inverse_leaf[leaf]}", leaf == "kernel"


def expected_shapes(cfg: BertConfig) -> dict[str, tuple[int, ...]]:
  """Flax path -> shape of every parameter of ``cfg``'s encoder (no memory is allocated)."""
  abstract = jax.eval_shape(lambda: init_params(cfg, jax.random.PRNGKey(0)))
  return {k: tuple(v.shape) for k, v in flatten(abstract).items()}


def infer_config(tensors: Mapping[str, np.ndarray], num_heads: int) -> BertConfig:
  """Sizes from the tensors' shapes (the head count cannot be read off shapes)."""
  def shape(name):
    if name not in tensors:
      raise ValueError(f"missing tensor {name!r}: cannot infer the BERT config without it")
    return tensors[name].shape
  vocab, hidden = shape("embeddings.word_embeddings.weight")
  layers = {int(m.group(1)) for m in map(_HF_LAYER.fullmatch, tensors) if m}
  return BertConfig(
      vocab_size=vocab, hidden_size=hidden, num_layers=max(layers, default=-1) + 1,
      num_heads=num_heads,
      intermediate_size=shape("encoder.layer.0.intermediate.dense.weight")[0],
      max_position=shape("embeddings.position_embeddings.weight")[0],
      type_vocab_size=shape("embeddings.token_type_embeddings.weight")[0],
      with_pooler="pooler.dense.weight" in tensors)


def _check_position_ids(value: np.ndarray, cfg: BertConfig) -> None:
  want = np.arange(cfg.max_position)[None, :]
  if value.shape != want.shape or not np.array_equal(value, want):
    raise ValueError(f"tensor {POSITION_IDS!r} of shape {value.shape} is not arange("
                     f"{cfg.max_position}) of shape {want.shape}: custom position ids are not "
                     "supported")


def hf_tensors_to_params(tensors: Mapping[str, np.ndarray], cfg: BertConfig) -> tuple[dict, BertConfig]:
  """HF tensors -> (Flax params (numpy leaves), config). Errors name every offending tensor:
  unknown names, shapes that do not fit ``cfg``, layers beyond ``cfg.num_layers``, and
  missing tensors. A file without pooler tensors gives ``with_pooler=False``."""
  has_pooler = any(n.startswith("pooler.") for n in tensors)
  cfg = cfg.replace(with_pooler=has_pooler)
  want = expected_shapes(cfg)
  flat, seen, errors = {}, set(), []
  for name, value in tensors.items():
    if name == POSITION_IDS:
      try:
        _check_position_ids(value, cfg)
      except ValueError as e:
        errors.append(str(e))
      continue
    try:
      path, transpose = hf_to_flax_name(name)
    except ValueError as e:
      errors.append(str(e))
      continue
    seen.add(path)
    value = np.asarray(value)
    value = value.T if transpose else value
    if path not in want:
      errors.append(f"tensor {name!r} does not fit the config ({cfg.num_layers} layers)")
    elif value.shape != want[path]:
      need = want[path][::-1] if transpose else want[path]  # in the file's (HF) layout
      errors.append(f"tensor {name!r} has shape {tuple(tensors[name].shape)}; the config "
                    f"needs {need}")
    else:
      flat[path] = value
  missing = [flax_to_hf_name(p)[0] for p in want if p not in seen]
  if missing:
    errors.append(f"missing tensor(s): {', '.join(missing)}")
  if errors:
    raise ValueError("cannot import BERT weights:\n  " + "\n  ".join(errors))
  return unflatten({p: flat[p] for p in want}), cfg


def _files(path: str) -> tuple[str, Optional[str]]:
  """(safetensors file, config.json or None) for a file or a model folder."""
  if os.path.isdir(path):
    weights = os.path.join(path, "model.safetensors")
    config = os.path.join(path, "config.json")
  else:
    weights, config = path, os.path.join(os.path.dirname(path), "config.json")
  if not os.path.isfile(weights):
    raise FileNotFoundError(f"no safetensors file at {weights!r}")
  return weights, config if os.path.isfile(config) else None


def load_safetensors(path: str, config: Optional[BertConfig] = None,
                     num_heads: Optional[int] = None) -> tuple[dict, BertConfig]:
  """(params, config) of a HF BERT safetensors file or folder (``model.safetensors``).

  The config is ``config``, else the ``config.json`` beside the weights, else inferred from
  the shapes with ``num_heads`` (which shapes do not reveal).
  """
  from safetensors.numpy import load_file
  weights, config_file = _files(path)
  tensors = load_file(weights)
  if config is None and config_file:
    with open(config_file) as f:
      config = bert_config_from_hf(json.load(f))
  if config is None:
    if num_heads is None:
      raise ValueError(f"{path!r} has no config.json: pass config= or num_heads=")
    config = infer_config(tensors, num_heads)
  return hf_tensors_to_params(tensors, config)


def params_to_hf_tensors(params: Mapping[str, Any], position_ids: bool = True) -> dict[str, np.ndarray]:
  """Flax params -> HF tensor dict (numpy, contiguous). Layers are renumbered 0..n-1 in index
  order; ``position_ids`` adds the ``embeddings.position_ids`` buffer as HF files carry it."""
  flat = {k: np.asarray(jax.device_get(v)) for k, v in flatten(params).items()}
  layers = sorted({int(m.group(1)) for m in map(_FLAX_LAYER.match, flat) if m})
  renumber = {old: new for new, old in enumerate(layers)}
  out = {}
  for path, value in flat.items():
    m = _FLAX_LAYER.match(path)
    name, transpose = flax_to_hf_name(path, renumber[int(m.group(1))] if m else None)
    out[name] = np.ascontiguousarray(value.T if transpose else value)
  if position_ids:
    pos = "embeddings.position_embeddings.weight"
    if pos not in out:
      raise ValueError(f"missing parameter {hf_to_flax_name(pos)[0]!r}: cannot size "
                       f"{POSITION_IDS!r}")
    out[POSITION_IDS] = np.arange(out[pos].shape[0], dtype=np.int64)[None, :]
  _check_complete(out, len(layers))
  return out


def _check_complete(tensors: Mapping[str, np.ndarray], num_layers: int) -> None:
  """A partial tree (a layer without its LayerNorm, say) would export a broken model."""
  cfg = infer_config(tensors, num_heads=1)
  want = {flax_to_hf_name(p)[0] for p in expected_shapes(cfg.replace(num_layers=num_layers))}
  missing = sorted(want - set(tensors))
  if missing:
    raise ValueError(f"cannot export: missing parameter(s) for tensor(s) {', '.join(missing)}")


def export_safetensors(params: Mapping[str, Any], path: str,
                       config: Optional[BertConfig] = None, position_ids: bool = True) -> str:
  """Write ``params`` as HF safetensors. ``path`` is a ``.safetensors`` file or a folder
  (then ``model.safetensors`` and, given ``config``, a HF ``config.json`` with the exported
  layer count). Returns the weights file's path."""
  from safetensors.numpy import save_file
  tensors = params_to_hf_tensors(params, position_ids)
  if path.endswith(".safetensors"):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    weights = path
  else:
    os.makedirs(path, exist_ok=True)
    weights = os.path.join(path, "model.safetensors")
    if config is not None:
      layers = len({m.group(1) for m in map(_HF_LAYER.fullmatch, tensors) if m})
      with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(bert_config_to_hf(config.replace(num_layers=layers)), f, indent=2)
  save_file(tensors, weights, metadata={"format": "pt"})
  return weights
