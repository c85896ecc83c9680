"""The Hugging Face Llama layout (``model.safetensors``, ``config.json``, tokenizer files) <->
Flax :class:`~distill_jax.models.llama.Llama` parameters, so a student goes to the tools
people serve with (``transformers``, vLLM, llama.cpp's converter) and back.
"""
import json
import os
import re
from typing import Any, Mapping, Optional

import jax
import numpy as np
import tokenizers

from distill_jax.errors import InputError, MissingInput
from distill_jax.files import atomic, write_json
from distill_jax.models.llama import LlamaConfig
from distill_jax.paths import flatten, unflatten

# HF tensor (within model.layers.{i}. for the block ones) -> (Flax path, transposed?)
_TOP = {"model.embed_tokens.weight": ("embed/embedding", False),
        "model.norm.weight": ("final_norm/scale", False),
        "lm_head.weight": ("lm_head/kernel", True)}
_BLOCK = {"input_layernorm.weight": ("attn_norm/scale", False),
          "self_attn.q_proj.weight": ("attention/query/kernel", True),
          "self_attn.k_proj.weight": ("attention/key/kernel", True),
          "self_attn.v_proj.weight": ("attention/value/kernel", True),
          "self_attn.o_proj.weight": ("attention/output/kernel", True),
          "post_attention_layernorm.weight": ("mlp_norm/scale", False),
          "mlp.gate_proj.weight": ("mlp/gate/kernel", True),
          "mlp.up_proj.weight": ("mlp/up/kernel", True),
          "mlp.down_proj.weight": ("mlp/down/kernel", True)}
_HF_BLOCK = re.compile(r"model\.layers\.(\d+)\.(.+)")
_FX_BLOCK = re.compile(r"layer_(\d+)/(.+)")
# LlamaConfig field -> config.json key
_HF_KEYS = {"vocab_size": "vocab_size", "hidden_size": "hidden_size",
            "num_layers": "num_hidden_layers", "num_heads": "num_attention_heads",
            "num_kv_heads": "num_key_value_heads", "intermediate_size": "intermediate_size",
            "rope_theta": "rope_theta", "rms_norm_eps": "rms_norm_eps",
            "tie_embeddings": "tie_word_embeddings", "max_position": "max_position_embeddings"}


def config_to_hf(cfg: LlamaConfig, bos_id: Optional[int], eos_id: Optional[int]) -> dict:
  return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
          **{k: getattr(cfg, f) for f, k in _HF_KEYS.items()}, "head_dim": cfg.head_dim,
          "attention_bias": False, "mlp_bias": False, "torch_dtype": "float32",
          "bos_token_id": bos_id, "eos_token_id": eos_id}


def config_from_hf(hf: Mapping[str, Any]) -> LlamaConfig:
  if hf.get("model_type") != "llama" or hf.get("hidden_act", "silu") != "silu" or hf.get(
      "rope_scaling"):
    raise InputError(f"config.json: model_type={hf.get('model_type')!r}, hidden_act="
                     f"{hf.get('hidden_act')!r}, rope_scaling={hf.get('rope_scaling')!r}: only "
                     "plain Llama (silu, no RoPE scaling) is implemented")
  defaults = LlamaConfig()
  return LlamaConfig(**{f: type(getattr(defaults, f))(hf.get(k, getattr(defaults, f)))
                        for f, k in _HF_KEYS.items()})


def params_to_hf(params: Any) -> dict[str, np.ndarray]:
  """Flax params -> HF tensors; blocks renumbered 0..n-1 in index order."""
  flat = {k: np.asarray(jax.device_get(v), np.float32) for k, v in flatten(params).items()}
  blocks = sorted({int(m.group(1)) for m in map(_FX_BLOCK.fullmatch, flat) if m})
  top = {fx: (hf, t) for hf, (fx, t) in _TOP.items()}
  block = {fx: (hf, t) for hf, (fx, t) in _BLOCK.items()}
  out = {}
  for path, value in flat.items():
    m = _FX_BLOCK.fullmatch(path)
    hf, transpose = (top.get(path, (None, False)) if m is None else block.get(m.group(2),
                                                                             (None, False)))
    if hf is None:
      raise InputError(f"unknown parameter {path!r}: not a Llama parameter")
    name = hf if m is None else f"model.layers.{blocks.index(int(m.group(1)))}.{hf}"
    out[name] = np.ascontiguousarray(value.T if transpose else value)
  return out


def hf_to_params(tensors: Mapping[str, np.ndarray], cfg: LlamaConfig) -> dict:
  """HF tensors -> Flax params; an unknown tensor, a block beyond the config or a wrong shape
  is an error naming it."""
  flat, errors = {}, []
  for name, value in tensors.items():
    m = _HF_BLOCK.fullmatch(name)
    fx, transpose = (_TOP.get(name, (None, False)) if m is None
                     else _BLOCK.get(m.group(2), (None, False)))
    if fx is None or (m and int(m.group(1)) >= cfg.num_layers):
      errors.append(f"unknown tensor {name!r} for a {cfg.num_layers}-block Llama")
      continue
    flat[fx if m is None else f"layer_{m.group(1)}/{fx}"] = np.asarray(
        value, np.float32).T if transpose else np.asarray(value, np.float32)
  if errors:
    raise InputError("cannot import Llama weights:\n  " + "\n  ".join(errors))
  return unflatten(flat)


def is_llama_folder(path: str) -> bool:
  config = os.path.join(path, "config.json")
  if not os.path.isfile(config) or not os.path.isfile(os.path.join(path, "model.safetensors")):
    return False
  with open(config) as f:
    return json.load(f).get("model_type") == "llama"


def load(path: str) -> tuple[LlamaConfig, dict]:
  """(config, params) of a Hugging Face Llama folder."""
  from safetensors.numpy import load_file
  if not is_llama_folder(path):
    raise MissingInput(f"{path!r} is not a Llama folder (config.json with model_type 'llama' "
                       "and model.safetensors)")
  with open(os.path.join(path, "config.json")) as f:
    cfg = config_from_hf(json.load(f))
  tensors = load_file(os.path.join(path, "model.safetensors"))
  if cfg.tie_embeddings:
    tensors.pop("lm_head.weight", None)      # some exports write the tied matrix twice
  return cfg, hf_to_params(tensors, cfg)


def export(params: Any, directory: str, config: Mapping[str, Any],
           tokenizer: tokenizers.Tokenizer, eos_id: Optional[int] = None,
           bos_id: Optional[int] = None) -> str:
  """Write ``model.safetensors``, ``config.json`` and the tokenizer files into ``directory``."""
  from safetensors.numpy import save_file
  tensors = params_to_hf(params)
  layers = len({m.group(1) for m in map(_HF_BLOCK.fullmatch, tensors) if m})
  cfg = LlamaConfig.from_dict({k: v for k, v in config.items() if k != "name"}).replace(
      num_layers=layers)
  os.makedirs(directory, exist_ok=True)
  eos = tokenizer.id_to_token(eos_id) if eos_id is not None else None
  write_json(os.path.join(directory, "config.json"), config_to_hf(cfg, bos_id, eos_id))
  write_json(os.path.join(directory, "tokenizer_config.json"),
             {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": eos,
              "model_max_length": cfg.max_position, "clean_up_tokenization_spaces": False})
  with atomic(os.path.join(directory, "tokenizer.json")) as tmp:
    tokenizer.save(tmp)
  weights = os.path.join(directory, "model.safetensors")
  with atomic(weights) as tmp:
    save_file(tensors, tmp, metadata={"format": "pt"})
  return weights
