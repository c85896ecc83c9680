"""Sentence embeddings (all-MiniLM-L6-v2, BERT encoders) distilled on unlabelled text.

Training: sentences (a text file, or an STS CSV's two columns) tokenised once. Held-out: STS
pairs (a CSV or ``tfds:glue/stsb``), Spearman x100 of cosine against gold. Agreement: mean
cosine with the teacher. Exports add HF safetensors, ``config.json`` and ``tokenizer.json``.
"""
import os
import shutil
from typing import Any, Optional

import numpy as np

from distill_jax import train
from distill_jax.data.sources import SOURCES, tfds_builder
from distill_jax.errors import InputError, MissingInput
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
  builder = tfds_builder(name, data_dir, may_download=False,
                         how_to_point="set data.data_dir=DIR, or pass an STS-benchmark CSV as "
                                      "data.eval_path (evaluation never downloads).")
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
  spec = config.teacher.load
  path = os.path.join(minilm.minilm_path() if spec in ("", "minilm") else spec, "tokenizer.json")
  if not os.path.isfile(path):
    raise MissingInput(f"teacher.load={spec!r} has no tokenizer.json beside its weights")
  return path


def trim(batch: dict, multiple: int = 16) -> dict:
  """Drop padding columns beyond the batch's longest row (rounded up to ``multiple``, so the
  jitted step sees few distinct lengths)."""
  longest = int(batch["attention_mask"].sum(1).max())
  length = min(batch["input_ids"].shape[1], -(-longest // multiple) * multiple)
  return {k: (v[:, :length] if k in TOKEN_KEYS else v) for k, v in batch.items()}


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

  def check(self, config, data) -> None:
    for role in ("teacher", "student"):
      if config[role].mixup:
        raise InputError(f"{role}.mixup={config[role].mixup}: token ids cannot be mixed up; "
                         "set it to 0")

  def _embed(self, model, params, data, config, sentences) -> np.ndarray:
    return minilm.embed(model, params, data.eval["tokenizer"], sentences,
                        config.eval_batch_size, config.data.eval_max_length)

  def reference(self, model, params, data, mesh, config) -> float:
    return self.evaluate(model, params, data, mesh, config)["spearman"]

  def evaluate(self, model, params, data, mesh, config, reference=None) -> dict:
    score = sts_score(lambda s: self._embed(model, params, data, config, s), data.eval["pairs"])
    metrics = {"spearman": score}
    if reference is not None:
      metrics["of_teacher"] = score / reference
    return metrics

  def agreement(self, student, student_params, teacher, teacher_params, data, mesh, config,
                num_examples) -> float:
    rows = {k: v[:num_examples] for k, v in data.train.items()}
    pooled = lambda m, p: normalize(train.predict(m, p, rows, mesh, config.eval_batch_size,
                                                  trim)["pooled"])
    return float(np.mean(np.sum(pooled(student, student_params) * pooled(teacher, teacher_params),
                                -1)))

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
    shutil.copyfile(data.info["tokenizer"], os.path.join(directory, "tokenizer.json"))


TASKS.register("sentence_embedding")(SentenceEmbedding())
