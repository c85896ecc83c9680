"""HuggingFace BERT safetensors <-> :class:`~distill_jax.models.bert.BertEncoder` parameters.

Names map one to one; PyTorch Linear weights (out, in) are transposed to Flax's (in, out).
Import then export is bit-identical (the pooler kept when present; the ``position_ids`` buffer
checked on import, written on export). Exported layers are renumbered 0..n-1, so a student
made of a subset of the teacher's blocks exports as a plain n-layer BERT.
"""
import json
import os
import re
from typing import Any, Mapping, Optional

import jax
import numpy as np

from distill_jax.errors import InputError, MissingInput
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
    raise InputError(f"unknown tensor {name!r}: not a BERT parameter this port maps")
  flax_leaf = _leaf_to_flax(flax_module, leaf)
  if flax_leaf is None:
    raise InputError(f"unknown tensor {name!r}: {module!r} has no parameter {leaf!r}")
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
    raise InputError(f"unknown parameter {path!r}: not a BertEncoder parameter")
  inverse_leaf = {"embedding": "weight", "scale": "weight", "kernel": "weight", "bias": "bias"}
  if leaf not in inverse_leaf or _leaf_to_flax(module, inverse_leaf[leaf]) != leaf:
    raise InputError(f"unknown parameter {path!r}: {module!r} has no parameter {leaf!r}")
  return f"{hf_module}.{inverse_leaf[leaf]}", leaf == "kernel"


def expected_shapes(cfg: BertConfig) -> dict[str, tuple[int, ...]]:
  """Flax path -> shape of every parameter of ``cfg``'s encoder (no memory is allocated)."""
  abstract = jax.eval_shape(lambda: init_params(cfg, jax.random.PRNGKey(0)))
  return {k: tuple(v.shape) for k, v in flatten(abstract).items()}


def _check_position_ids(value: np.ndarray, cfg: BertConfig) -> None:
  want = np.arange(cfg.max_position)[None, :]
  if value.shape != want.shape or not np.array_equal(value, want):
    raise InputError(f"tensor {POSITION_IDS!r} of shape {value.shape} is not arange("
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
    raise InputError("cannot import BERT weights:\n  " + "\n  ".join(errors))
  return unflatten({p: flat[p] for p in want}), cfg


def _files(path: str) -> tuple[str, Optional[str]]:
  """(safetensors file, config.json or None) for a file or a model folder."""
  if os.path.isdir(path):
    weights = os.path.join(path, "model.safetensors")
    config = os.path.join(path, "config.json")
  else:
    weights, config = path, os.path.join(os.path.dirname(path), "config.json")
  if not os.path.isfile(weights):
    raise MissingInput(f"no safetensors file at {weights!r}")
  return weights, config if os.path.isfile(config) else None


def load_safetensors(path: str, config: Optional[BertConfig] = None) -> tuple[dict, BertConfig]:
  """(params, config) of a HF BERT safetensors file or folder (``model.safetensors``); the
  config is ``config``, else the ``config.json`` beside the weights."""
  from safetensors.numpy import load_file
  weights, config_file = _files(path)
  if config is None and not config_file:
    raise MissingInput(f"{path!r} has no config.json beside its weights: pass config=")
  try:
    tensors = load_file(weights)
  except Exception as e:   # safetensors raises its own error types for a damaged file
    raise InputError(f"{weights!r} is not a readable safetensors file ({type(e).__name__}: "
                     f"{str(e)[:200]})") from None
  if config is None:
    with open(config_file) as f:
      config = bert_config_from_hf(json.load(f))
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
      raise InputError(f"missing parameter {hf_to_flax_name(pos)[0]!r}: cannot size "
                       f"{POSITION_IDS!r}")
    out[POSITION_IDS] = np.arange(out[pos].shape[0], dtype=np.int64)[None, :]
  return out


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
