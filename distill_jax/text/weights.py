"""HuggingFace BERT safetensors <-> Flax parameters, bit-identical both ways (Linear weights
transposed; ``position_ids`` checked and written back); exported layers are renumbered 0..n-1.
"""
import json
import os
import re
from typing import Any, Mapping, Optional

import jax
import numpy as np

from distill_jax.errors import InputError, MissingInput
from distill_jax.files import atomic, write_json
from distill_jax.models.bert import BertConfig, bert_config_from_hf, bert_config_to_hf, init_params
from distill_jax.paths import flatten, unflatten

POSITION_IDS = "embeddings.position_ids"

# HF module -> Flax module, outside the layers and inside ``encoder.layer.{i}.``.
_TOP = {"embeddings.word_embeddings": "embeddings/word_embeddings",
        # factorised token table only (BertConfig.embedding_rank): not a transformers name
        "embeddings.word_projection": "embeddings/word_projection",
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
_LEAVES = (("embeddings", {"weight": "embedding"}), ("norm", {"weight": "scale", "bias": "bias"}),
           ("", {"weight": "kernel", "bias": "bias"}))    # Embedding, LayerNorm, Linear
_HF_LAYER = re.compile(r"encoder\.layer\.(\d+)\.")


def names(layers) -> dict[str, tuple[str, bool]]:
  """HF tensor name -> (Flax path, transposed?) of a BERT with these layer indices."""
  modules = dict(_TOP, **{f"encoder.layer.{i}.{h}": f"encoder/layer_{i}/{f}"
                          for i in layers for h, f in _LAYER.items()})
  out = {}
  for hf, fx in modules.items():
    leaves = next(leaves for suffix, leaves in _LEAVES if fx.endswith(suffix))
    out.update({f"{hf}.{h}": (f"{fx}/{f}", f == "kernel") for h, f in leaves.items()})
  return out


def expected_shapes(cfg: BertConfig) -> dict[str, tuple[int, ...]]:
  """Flax path -> shape of every parameter of ``cfg``'s encoder (no memory is allocated)."""
  abstract = jax.eval_shape(lambda: init_params(cfg, jax.random.PRNGKey(0)))
  return {k: tuple(v.shape) for k, v in flatten(abstract).items()}


def hf_tensors_to_params(tensors: Mapping[str, np.ndarray], cfg: BertConfig) -> tuple:
  """HF tensors -> (Flax params (numpy leaves), config). Errors name every offending tensor:
  unknown names, shapes that do not fit ``cfg``, layers beyond ``cfg.num_layers``, and
  missing tensors. A file without pooler tensors gives ``with_pooler=False``."""
  cfg = cfg.replace(with_pooler=any(n.startswith("pooler.") for n in tensors))
  want = expected_shapes(cfg)
  table = names({int(m.group(1)) for m in map(_HF_LAYER.match, tensors) if m})
  flat, errors = {}, []
  for name, value in tensors.items():
    if name == POSITION_IDS:
      if np.shape(value) != (1, cfg.max_position) or not np.array_equal(
          value, np.arange(cfg.max_position)[None]):
        errors.append(f"tensor {name!r} of shape {np.shape(value)} is not arange("
                      f"{cfg.max_position}): custom position ids are not supported")
    elif name not in table:
      errors.append(f"unknown tensor {name!r}: not a BERT parameter this port maps")
    else:
      path, transpose = table[name]
      value = np.asarray(value).T if transpose else np.asarray(value)
      if path not in want:
        errors.append(f"tensor {name!r} does not fit the config ({cfg.num_layers} layers)")
      elif value.shape != want[path]:
        need = want[path][::-1] if transpose else want[path]  # in the file's (HF) layout
        errors.append(f"tensor {name!r} has shape {tuple(tensors[name].shape)}; the config "
                      f"needs {need}")
      else:
        flat[path] = value
  inverse = {p: hf for hf, (p, _) in names(range(cfg.num_layers)).items()}
  missing = [inverse[p] for p in want if p not in flat and p in inverse]
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


def params_to_hf_tensors(params: Mapping[str, Any], position_ids: bool = True) -> dict:
  """Flax params -> HF tensor dict (numpy, contiguous). Layers are renumbered 0..n-1 in index
  order; ``position_ids`` adds the ``embeddings.position_ids`` buffer as HF files carry it."""
  flat = {k: np.asarray(jax.device_get(v)) for k, v in flatten(params).items()}
  layers = sorted({int(m.group(1)) for m in map(re.compile(r"encoder/layer_(\d+)/").match, flat)
                   if m})
  inverse = {p: (hf, t) for hf, (p, t) in names(layers).items()}
  renumber = lambda hf: _HF_LAYER.sub(lambda m: f"encoder.layer.{layers.index(int(m.group(1)))}.",
                                      hf)
  out = {}
  for path, value in flat.items():
    if path not in inverse:
      raise InputError(f"unknown parameter {path!r}: not a BertEncoder parameter")
    name, transpose = inverse[path]
    out[renumber(name)] = np.ascontiguousarray(value.T if transpose else value)
  if position_ids:
    pos = "embeddings.position_embeddings.weight"
    if pos not in out:
      raise InputError(f"missing parameter 'embeddings/position_embeddings/embedding': cannot "
                       f"size {POSITION_IDS!r}")
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
      layers = len({m.group(1) for m in map(_HF_LAYER.match, tensors) if m})
      write_json(os.path.join(path, "config.json"),
                 bert_config_to_hf(config.replace(num_layers=layers)))
  with atomic(weights) as tmp:
    save_file(tensors, tmp, metadata={"format": "pt"})
  return weights
