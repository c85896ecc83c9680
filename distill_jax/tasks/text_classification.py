"""Text classification (SST-2 and any sentence-label data): a fine-tuned BERT/MiniLM teacher,
BERT or CNN students. Data: a GLUE-layout TSV (``sentence<TAB>label`` with a header) or a
prepared TFDS GLUE dataset; held out: accuracy, loss and agreement with the teacher.
Optional augmentation of the transfer set (Tang et al., 2019): unlabelled copies of the
training sentences with masked tokens and sampled n-grams, which only the teacher terms see.
Optionally only a fraction of the training rows keeps its labels (``data.labelled``).
"""
import dataclasses
import os
from typing import Any

import numpy as np

from distill_jax import inference, sharding
from distill_jax.data.dataset import seeded_split
from distill_jax.data.sources import tfds_builder
from distill_jax.errors import InputError, MissingInput
from distill_jax.paths import fingerprint
from distill_jax.tasks import TASKS, TaskData
from distill_jax.tasks.classification import label_metrics, top1_agreement
from distill_jax.tasks.sentence_embedding import SentenceEmbedding, tokenizer_file, trim
from distill_jax.text.tokenize import TextTokenizer


def read_tsv(path: str) -> tuple[list[str], np.ndarray]:
  """Sentences and integer labels of a GLUE-layout TSV: a header naming ``sentence`` and
  ``label`` (other columns ignored), one tab-separated row per example."""
  if not path or not os.path.isfile(path):
    raise MissingInput(f"labelled text file {path!r} does not exist (a TSV with a "
                       "'sentence<TAB>label' header, as GLUE's SST-2)")
  sentences, labels = [], []
  with open(path, encoding="utf-8") as f:
    header = f.readline().rstrip("\n").split("\t")
    missing = [c for c in ("sentence", "label") if c not in header]
    if missing:
      raise InputError(f"{path}: the header {header} has no {missing} column (GLUE layout: "
                       "'sentence<TAB>label')")
    s_col, l_col = header.index("sentence"), header.index("label")
    for number, line in enumerate(f, start=2):
      if not line.strip():
        continue
      fields = line.rstrip("\n").split("\t")
      if len(fields) != len(header):
        raise InputError(f"{path}, line {number}: {len(fields)} tab-separated fields, the "
                         f"header has {len(header)} ({header})")
      try:
        labels.append(int(fields[l_col]))
      except ValueError:
        raise InputError(f"{path}, line {number}: label {fields[l_col]!r} is not an "
                         "integer") from None
      sentences.append(fields[s_col].strip())
  if not sentences:
    raise InputError(f"{path}: no examples below the header")
  labels = np.asarray(labels, np.int32)
  if labels.min() < 0:
    raise InputError(f"{path}: label {labels.min()} < 0")
  return sentences, labels


def read_tfds(name: str, split: str, data_config) -> tuple[list[str], np.ndarray]:
  """A prepared TFDS dataset with ``sentence`` and ``label`` features (``glue/sst2``; its
  ``validation`` split is GLUE dev); downloaded only with ``data.download=True``."""
  import tensorflow_datasets as tfds
  builder = tfds_builder(name, data_config.data_dir or None, data_config.download)
  rows = list(tfds.as_numpy(builder.as_dataset(split=split)))
  text = lambda s: s.decode("utf-8") if isinstance(s, bytes) else str(s)
  return [text(r["sentence"]) for r in rows], np.asarray([r["label"] for r in rows], np.int32)


def read_split(data_config, which: str) -> tuple[list[str], np.ndarray]:
  path = data_config.path if which == "train" else data_config.eval_path
  if data_config.source == "tfds":
    return read_tfds(data_config.name, "train" if which == "train" else "validation",
                     data_config)
  if data_config.source != "tsv":
    raise InputError(f"data.source={data_config.source!r}: text_classification reads 'tsv' "
                     "(data.path, data.eval_path) or 'tfds' (data.name, e.g. 'glue/sst2')")
  return read_tsv(path)


def augment(tokens: dict, copies: int, mask_prob: float, ngram_prob: float, mask_id: int,
            seed: int) -> dict:
  """``copies`` altered copies of every row (Tang et al., 2019, without their POS-guided
  swaps): with probability ``ngram_prob`` the words become a random n-gram of them (n in 1..5),
  then each word becomes ``mask_id`` with probability ``mask_prob``. [CLS] and [SEP] stay."""
  rng = np.random.default_rng(seed)
  ids, mask = tokens["input_ids"], tokens["attention_mask"]
  out = np.zeros((copies * len(ids), ids.shape[1]), np.int32)
  out_mask = np.zeros_like(out)
  for c in range(copies):
    for i, (row, length) in enumerate(zip(ids, mask.sum(1))):
      words = row[1:length - 1].copy()
      if len(words) > 1 and rng.random() < ngram_prob:
        n = int(rng.integers(1, min(5, len(words)) + 1))
        start = int(rng.integers(0, len(words) - n + 1))
        words = words[start:start + n]
      words[rng.random(len(words)) < mask_prob] = mask_id
      new = np.concatenate([row[:1], words, row[length - 1:length]])
      out[c * len(ids) + i, :len(new)] = new
      out_mask[c * len(ids) + i, :len(new)] = 1
  return {"input_ids": out, "attention_mask": out_mask, "token_type_ids": np.zeros_like(out)}


def unlabel(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
  """``labels`` with all but a seeded ``fraction`` of the rows (rounded, at least one) set to
  -1, unlabelled: those rows stay in the transfer set for the teacher terms only."""
  if not isinstance(fraction, (int, float)) or not 0.0 < fraction <= 1.0:
    raise InputError(f"data.labelled.fraction={fraction!r} must be in (0, 1]: the share of "
                     "training rows that keep their labels")
  if fraction == 1.0:
    return labels
  keep = np.random.default_rng(seed).permutation(len(labels))[
      :max(1, int(round(len(labels) * fraction)))]
  out = np.full_like(labels, -1)
  out[keep] = labels[keep]
  return out


class TextClassification(SentenceEmbedding):
  """Its pretrained models (``minilm``, a safetensors folder) and exports (safetensors for a
  plain BERT, the tokenizer) are the sentence-embedding task's."""
  metric = "accuracy"
  agreement_output = "logits"

  def load(self, config) -> TaskData:
    d = config.data
    tokenizer_path = tokenizer_file(config)
    tokenizer = TextTokenizer(tokenizer_path)
    sentences, labels = read_split(d, "train")
    dev_sentences, dev_labels = read_split(d, "eval")
    tokens = tokenizer.encode(sentences, d.max_length, padding="max_length")
    num_classes = int(max(labels.max(), dev_labels.max()) + 1)
    train_rows = dict(tokens, y=unlabel(labels, d.labelled.fraction, d.labelled.seed))
    a = d.augment
    if a.copies:
      extra = augment(tokens, a.copies, a.mask_prob, a.ngram_prob,
                      tokenizer.tokenizer.token_to_id("[MASK]"), a.seed)
      train_rows = {k: np.concatenate([v, extra[k] if k in extra else
                                       np.full(len(extra["input_ids"]), -1, np.int32)])
                    for k, v in train_rows.items()}
    # Rows without a label (the unlabelled share, augmented copies) are for the teacher terms.
    unlabelled = train_rows["y"] < 0
    dev = tokenizer.encode(dev_sentences, d.eval_max_length, padding="max_length")
    order = np.argsort(-dev["attention_mask"].sum(1), kind="stable")   # little padding a batch
    held_out = {"tokens": {k: v[order] for k, v in dev.items()}, "y": dev_labels[order],
                "tokenizer": tokenizer}
    return TaskData(os.path.basename(d.path or d.name) or "text", train_rows, held_out,
                    {"num_classes": num_classes, "tokenizer": tokenizer_path},
                    {"source": d.source, "path": d.path, "eval_path": d.eval_path,
                     "name": d.name, "max_length": d.max_length,
                     "eval_max_length": d.eval_max_length, "augment": dict(a),
                     "labelled": dict(d.labelled),
                     "sha256": fingerprint([train_rows, dev, dev_labels])},
                    example={k: v[:2] for k, v in train_rows.items()}, prepare=trim,
                    teacher_only=unlabelled if unlabelled.any() else None)

  def logits(self, model, params: Any, data: TaskData, mesh, config) -> np.ndarray:
    return inference.predict(model, params, data.eval["tokens"], mesh or sharding.make_mesh(),
                             config.eval_batch_size, trim)["logits"]

  def reference(self, model, params, data, mesh, config) -> np.ndarray:
    return self.logits(model, params, data, mesh, config)

  def evaluate(self, model, params, data, mesh, config, reference=None) -> dict:
    return label_metrics(self.logits(model, params, data, mesh, config), data.eval["y"],
                         reference)

  def agreement(self, student_outputs, teacher_outputs) -> float:
    return top1_agreement(student_outputs, teacher_outputs)

  def validation(self, data, fraction, seed) -> TaskData:
    """A seeded ``fraction`` of the labelled training rows held out (augmented rows stay)."""
    labelled = np.flatnonzero(data.train["y"] >= 0)
    held = np.sort(seeded_split(labelled, labelled, fraction, seed)[2])
    keep = np.setdiff1d(np.arange(data.num_train), held)
    tokens = {k: v[held] for k, v in data.train.items() if k != "y"}
    order = np.argsort(-tokens["attention_mask"].sum(1), kind="stable")
    held_out = dict(data.eval, tokens={k: v[order] for k, v in tokens.items()},
                    y=data.train["y"][held][order])
    return dataclasses.replace(data, name=f"{data.name}[val]",
                               train={k: v[keep] for k, v in data.train.items()},
                               eval=held_out,
                               identity=dict(data.identity, validation=(fraction, seed)),
                               teacher_only=None if data.teacher_only is None
                               else data.teacher_only[keep])


TASKS.register("text_classification")(TextClassification())
