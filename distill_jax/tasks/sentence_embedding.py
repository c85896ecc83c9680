"""Sentence embeddings (BERT encoders, all-MiniLM-L6-v2) distilled on unlabelled sentences;
held out: STS pairs, Spearman x100 of cosine; agreement: mean cosine with the teacher.
"""
import os
import shutil
from typing import Any, Optional, Sequence

import numpy as np

from distill_jax import inference, sharding
from distill_jax.data.sources import SOURCES, tfds_builder
from distill_jax.errors import InputError, MissingInput
from distill_jax.files import atomic
from distill_jax.models.bert import BertConfig, normalize
from distill_jax.paths import fingerprint
from distill_jax.tasks import TASKS, Task, TaskData
from distill_jax.text import minilm
from distill_jax.text.sts import StsPairs, read_sts_csv, sts_score
from distill_jax.text.tokenize import TextTokenizer
from distill_jax.text.weights import export_safetensors, load_safetensors

TOKEN_KEYS = ("input_ids", "attention_mask", "token_type_ids")


@SOURCES.register("sentences")
def read_sentences(data_config) -> list[str]:
  """Unlabelled sentences of ``data.path``: a text file (one per line) or an STS-format CSV
  (both columns). Empty lines are skipped and repeats kept once, in order of first appearance."""
  path = data_config.path
  if not path or not os.path.isfile(path):
    raise MissingInput(f"data.path: sentence file {path!r} does not exist (a text file with "
                       "one sentence per line, or an STS-format CSV)")
  if path.endswith(".csv"):
    pairs = read_sts_csv(path)
    lines = [s for pair in zip(pairs.sentence1, pairs.sentence2) for s in pair]
  else:
    with open(path, encoding="utf-8") as f:
      lines = [line.strip() for line in f]
  sentences = list(dict.fromkeys(s for s in lines if s))
  if not sentences:
    raise InputError(f"data.path: {path!r} holds no sentences")
  return sentences


def read_tfds_stsb(name: str, data_dir: Optional[str], split: str = "validation") -> StsPairs:
  """STS pairs of a prepared TFDS GLUE/STS-B dataset (its validation split is STS-B dev)."""
  import tensorflow_datasets as tfds
  builder = tfds_builder(name, data_dir, may_download=False)
  # Example by example: 1,500 rows, and batch_size=-1 crashed TF (vector::reserve) on strings.
  rows = list(tfds.as_numpy(builder.as_dataset(split=split)))
  text = lambda s: s.decode("utf-8") if isinstance(s, bytes) else str(s)
  return StsPairs([text(r["sentence1"]) for r in rows], [text(r["sentence2"]) for r in rows],
                  np.asarray([r["label"] for r in rows], np.float64))


def read_pairs(data_config) -> StsPairs:
  path = data_config.eval_path
  if not path:
    raise InputError("data.eval_path is empty: give an STS-format CSV (e.g. sts-dev.csv) or "
                     "tfds:glue/stsb")
  if path.startswith("tfds:"):
    return read_tfds_stsb(path[len("tfds:"):], data_config.data_dir or None)
  if not os.path.isfile(path):
    raise MissingInput(f"data.eval_path: STS file {path!r} does not exist")
  return read_sts_csv(path)


def tokenizer_file(config) -> str:
  """The teacher's ``tokenizer.json``: the packaged model's, or the one beside its weights."""
  spec = config.teacher.load or config.teacher.get("init", "")
  path = os.path.join(minilm.minilm_path() if spec in ("", "minilm") else spec, "tokenizer.json")
  if not os.path.isfile(path):
    raise MissingInput(f"teacher {spec!r} has no tokenizer.json beside its weights")
  return path


# Rows x padded length per inference batch, at most: a batch of long rows holds fewer rows.
TOKENS_PER_BATCH = 1024


def trim(batch: dict, multiple: int = 16) -> dict:
  """Drop padding columns beyond the batch's longest row (rounded up to ``multiple``, so the
  jitted step sees few distinct lengths)."""
  longest = int(batch["attention_mask"].sum(1).max())
  length = min(batch["input_ids"].shape[1], -(-longest // multiple) * multiple)
  return {k: (v[:, :length] if k in TOKEN_KEYS else v) for k, v in batch.items()}


def embed(model, params: Any, tokenizer: TextTokenizer, sentences: Sequence[str],
          batch_size: int = 64, max_length: int = minilm.MAX_LENGTH, mesh=None,
          max_tokens: Optional[int] = None) -> np.ndarray:
  """(N, hidden) L2-normalised sentence embeddings (the model's ``pooled`` output) in the order
  of ``sentences``; batched longest first (:func:`length_batches`; ``max_tokens``: its token
  bound, default :data:`TOKENS_PER_BATCH`; larger suits accelerators)."""
  tokens = tokenizer.encode(list(sentences), max_length, padding="max_length")
  pooled = predict_by_length(model, params, tokens, mesh or sharding.make_mesh(), batch_size,
                             "pooled", max_tokens or TOKENS_PER_BATCH)
  return np.asarray(normalize(pooled))


def length_batches(lengths: Sequence[int], batch_size: int, max_tokens: int = TOKENS_PER_BATCH,
                   multiple: int = 16) -> list[tuple[int, int]]:
  """``(start, rows)`` of consecutive batches over rows sorted longest first: ``batch_size``
  rows, or for long rows the largest power of two whose rows x padded length (the first row's
  length rounded up to ``multiple``, as :func:`trim` pads) stays within ``max_tokens``.

  Why: sorted batches of a fixed size pad every row to the batch's longest, so a batch holding
  the few 256-token sentences of a set of short ones ran at 256 x its row count; and attention
  costs length^2 per row. On tests/fixtures/minilm_sentences.txt (5 of 211 sentences past 128
  tokens) this made all-MiniLM-L6-v2 encode 4x-5x faster (docs/minilm.md). Powers of two keep
  the number of compiled shapes small."""
  out, start = [], 0
  while start < len(lengths):
    padded = -(-max(int(lengths[start]), 1) // multiple) * multiple
    rows = batch_size if batch_size * padded <= max_tokens else max(1, max_tokens // padded)
    rows = rows if rows == batch_size else 1 << (rows.bit_length() - 1)
    out.append((start, rows))
    start += rows
  return out


def predict_by_length(model, params: Any, tokens: dict, mesh, batch_size: int,
                      output: str, max_tokens: int = TOKENS_PER_BATCH) -> np.ndarray:
  """``model``'s ``output`` for every row of ``tokens``, in their order, computed longest first
  in :func:`trim`-med batches of :func:`length_batches` (little padding, bounded work)."""
  lengths = tokens["attention_mask"].sum(1)
  order = np.argsort(-lengths, kind="stable")
  return inference.predict(model, params, tokens, mesh, batch_size, trim, (output,), order=order,
                           batches=length_batches(lengths[order], batch_size, max_tokens))[output]


class SentenceEmbedding(Task):
  metric = "spearman"

  def load(self, config) -> TaskData:
    d = config.data
    if d.source != "sentences":
      raise InputError(f"data.source={d.source!r}: the sentence_embedding task reads "
                       "data.source='sentences'")
    tokenizer_path = tokenizer_file(config)
    tokenizer = TextTokenizer(tokenizer_path)
    sentences = read_sentences(d) if d.path else []
    tokens = (tokenizer.encode(sentences, d.max_length, padding="max_length") if sentences
              else {})
    pairs = read_pairs(d)
    example = tokenizer.encode((sentences or pairs.sentence1)[:2], d.max_length)
    return TaskData(os.path.basename(d.path) or "sentences", tokens,
                    {"pairs": pairs, "tokenizer": tokenizer},
                    {"tokenizer": tokenizer_path},
                    {"source": d.source, "path": d.path, "eval_path": d.eval_path,
                     "max_length": d.max_length, "eval_max_length": d.eval_max_length,
                     "sha256": fingerprint([tokens, pairs])},
                    example=example, prepare=trim)

  def reference(self, model, params, data, mesh, config) -> float:
    return self.evaluate(model, params, data, mesh, config)["spearman"]

  def evaluate(self, model, params, data, mesh, config, reference=None) -> dict:
    score = sts_score(lambda s: embed(model, params, data.eval["tokenizer"], s,
                                      config.eval_batch_size, config.data.eval_max_length, mesh,
                                      config.data.eval_max_tokens),
                      data.eval["pairs"])
    metrics = {"spearman": score}
    if reference is not None:
      metrics["of_teacher"] = score / reference
    return metrics

  agreement_output = "pooled"

  def agreement(self, student_outputs, teacher_outputs) -> float:
    """Mean cosine of the two models' sentence vectors."""
    return float(np.mean(np.sum(normalize(student_outputs) * normalize(teacher_outputs), -1)))

  def pretrained(self, spec: str) -> Optional[tuple[dict, Any]]:
    if spec == "minilm":
      model_config, params, _ = minilm.load_minilm()
      return model_config, params
    if os.path.isfile(os.path.join(spec, "model.safetensors")):
      params, cfg = load_safetensors(spec)
      return dict(name="bert", **cfg.to_dict()), params
    return None

  def export(self, directory, model, params, data, config) -> None:
    if config.export.safetensors and model.name == "bert":
      export_safetensors(params, directory, BertConfig.from_dict(
          {k: v for k, v in model.config.items() if k != "name"}))
    with atomic(os.path.join(directory, "tokenizer.json")) as tmp:
      shutil.copyfile(data.info["tokenizer"], tmp)


TASKS.register("sentence_embedding")(SentenceEmbedding())
