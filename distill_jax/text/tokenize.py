"""Batched WordPiece tokenisation with ``tokenizers``, as int32 numpy arrays.

A ``tokenizer.json`` may carry its own truncation and padding (all-MiniLM-L6-v2's pads to 128):
both are set here on every call: truncation to ``max_length`` tokens with [CLS] and [SEP], then
our padding to the batch's longest row (rounded up to a multiple) or to ``max_length``.
"""
import os
from typing import Sequence

import numpy as np

from distill_jax.errors import InputError, MissingInput

PADDINGS = ("longest", "max_length")


def padded_length(longest: int, max_length: int, padding: str = "longest",
                  pad_to_multiple_of: int = 1) -> int:
  """The batch's sequence length: ``max_length``, or ``longest`` rounded up to a multiple of
  ``pad_to_multiple_of`` but never past ``max_length`` (which may itself be no multiple)."""
  if padding not in PADDINGS:
    raise InputError(f"padding={padding!r}: use one of {PADDINGS}")
  if padding == "max_length":
    return max_length
  multiple = max(1, pad_to_multiple_of)
  return min(-(-longest // multiple) * multiple, max_length)


class TextTokenizer:
  """A ``tokenizers.Tokenizer`` with explicit truncation and our own padding."""

  def __init__(self, tokenizer_json: str, pad_id: int = 0):
    from tokenizers import Tokenizer
    if os.path.isdir(tokenizer_json):
      tokenizer_json = os.path.join(tokenizer_json, "tokenizer.json")
    if not os.path.isfile(tokenizer_json):
      raise MissingInput(f"no tokenizer file at {tokenizer_json!r}")
    self.path = tokenizer_json
    self.tokenizer = Tokenizer.from_file(tokenizer_json)
    self.tokenizer.no_padding()  # we pad (below); the file's fixed 128 would be wrong here
    self.pad_id = pad_id
    self._truncation = None

  def _truncate_to(self, max_length: int) -> None:
    if self._truncation != max_length:
      self.tokenizer.enable_truncation(max_length=max_length)
      self._truncation = max_length

  def encode(self, texts: Sequence[str], max_length: int = 256, padding: str = "longest",
             pad_to_multiple_of: int = 1) -> dict[str, np.ndarray]:
    """``input_ids``, ``attention_mask``, ``token_type_ids``: (len(texts), L) int32."""
    if isinstance(texts, str):
      raise TypeError("encode takes a list of texts, not one string")
    if max_length < 2:
      raise InputError(f"max_length={max_length}: needs room for [CLS] and [SEP]")
    self._truncate_to(max_length)
    encodings = self.tokenizer.encode_batch(list(texts))
    longest = max((len(e.ids) for e in encodings), default=1)
    length = padded_length(longest, max_length, padding, pad_to_multiple_of)
    batch = {"input_ids": np.full((len(encodings), length), self.pad_id, np.int32),
             "attention_mask": np.zeros((len(encodings), length), np.int32),
             "token_type_ids": np.zeros((len(encodings), length), np.int32)}
    for row, e in enumerate(encodings):
      n = len(e.ids)
      batch["input_ids"][row, :n] = e.ids
      batch["attention_mask"][row, :n] = 1
      batch["token_type_ids"][row, :n] = e.type_ids
    return batch

  def num_tokens(self, texts: Sequence[str], max_length: int = 256) -> np.ndarray:
    """Tokens per text after truncation (with [CLS] and [SEP])."""
    self._truncate_to(max_length)
    return np.array([len(e.ids) for e in self.tokenizer.encode_batch(list(texts))])
