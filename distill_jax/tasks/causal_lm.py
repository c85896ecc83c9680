"""Causal language models (the Llama family): plain text tokenised, packed into sequences and
trained on next tokens; held out: perplexity over strided windows (per token and per word),
samples and generation speed. Teachers: the packaged SmolLM2-135M-Instruct GGUF
(``teacher.load="smollm2"``), any Llama GGUF file, or a Hugging Face Llama folder.
"""
import dataclasses
import os
from typing import Any, Optional

import jax
import numpy as np
import tokenizers

from distill_jax import train
from distill_jax.errors import InputError, MissingInput
from distill_jax.files import atomic
from distill_jax.paths import fingerprint
from distill_jax.tasks import TASKS, Task, TaskData
from distill_jax.text import corpus, gguf, hf_llama
from distill_jax.text.generate import generate


def split_sequences(batch: dict) -> dict:
  """Packed rows ``seq`` (B, L + 1) -> inputs ``tokens`` and next-token targets ``y``."""
  if "seq" not in batch:
    return batch
  seq = batch.pop("seq")
  return {**batch, "tokens": seq[:, :-1], "y": seq[:, 1:]}


def load_tokenizer(spec: str, text: str) -> tuple[tokenizers.Tokenizer, Optional[int]]:
  """(tokenizer, end-of-document id or None) named by ``data.tokenizer``."""
  if spec == "char":
    return corpus.char_tokenizer(text), None
  if spec == "smollm2" or spec.endswith(".gguf"):
    return gguf.read_tokenizer(gguf.smollm2_path() if spec == "smollm2" else spec)
  if spec.endswith(".json"):
    if not os.path.isfile(spec):
      raise MissingInput(f"data.tokenizer: {spec!r} does not exist")
    return tokenizers.Tokenizer.from_file(spec), None
  raise InputError(f"data.tokenizer={spec!r}: use 'char', 'smollm2', a .gguf file or a "
                   "tokenizer.json file")


class CausalLM(Task):
  metric = "log_likelihood"      # mean held-out log-probability per token (higher is better)

  def load(self, config) -> TaskData:
    d = config.data
    if d.source != "text":
      raise InputError(f"data.source={d.source!r}: the causal_lm task reads data.source='text'")
    text = corpus.read_text(d.path)
    tokenizer, eos = load_tokenizer(d.tokenizer, text)
    ids = corpus.tokenize(text, tokenizer, d.documents, eos)
    if d.eval_path:
      held_text = corpus.read_text(d.eval_path, "data.eval_path")
      train_ids, held = ids, corpus.tokenize(held_text, tokenizer, d.documents, eos)
    else:
      train_ids, held = corpus.split(ids, d.test_fraction)
      held_text = tokenizer.decode(held.tolist(), skip_special_tokens=False)
    for p in config.generate.prompts:
      if not tokenizer.encode(p, add_special_tokens=False).ids:
        raise InputError(f"generate.prompts: {p!r} has no token in the tokenizer's vocabulary")
    seqs = corpus.pack(train_ids, d.max_length)
    stride = d.eval_stride or max(d.eval_max_length // 2, 1)
    prompts = [list(map(int, p)) for p in ([tokenizer.encode(s, add_special_tokens=False).ids
                                            for s in config.generate.prompts]
                                           or [held[:16], held[len(held) // 2:][:16]])]
    return TaskData(
        os.path.basename(d.path), {"seq": seqs},
        {"windows": corpus.windows(held, d.eval_max_length, stride),
         # per word only for word-level text (WikiText's convention); 0 for characters
         "words": len(held_text.split()) if d.tokenizer != "char" else 0,
         "window": (d.eval_max_length, stride), "tokenizer": tokenizer, "prompts": prompts,
         "eos": eos},
        {"vocab_size": tokenizer.get_vocab_size()},
        {"source": d.source, "path": d.path, "eval_path": d.eval_path,
         "tokenizer": corpus.tokenizer_id(tokenizer), "documents": d.documents,
         "max_length": d.max_length, "eval_max_length": d.eval_max_length, "stride": stride,
         "test_fraction": d.test_fraction, "sha256": fingerprint([ids, held])},
        example={"tokens": seqs[:2, :-1], "y": seqs[:2, 1:]}, prepare=split_sequences)

  def check(self, config, data) -> None:
    if config.generate.steps < 0 or config.generate.temperature < 0 or not (
        0 < config.generate.top_p <= 1) or config.generate.top_k < 0:
      raise InputError("generate: need steps >= 0, temperature >= 0, top_k >= 0 and "
                       "0 < top_p <= 1")

  def evaluate(self, model, params, data, mesh, config, reference=None) -> dict:
    w = data.eval["windows"]
    logprob = train.predict(model, params, {k: w[k] for k in ("tokens", "y")}, mesh,
                            config.eval_batch_size, outputs=("token_logprob",))["token_logprob"]
    nll, count = -float(np.sum(logprob * w["weight"])), float(np.sum(w["weight"]))
    metrics = {"log_likelihood": -nll / count, "perplexity": float(np.exp(nll / count))}
    if data.eval["words"]:
      metrics["word_perplexity"] = float(np.exp(nll / data.eval["words"]))
    g = config.generate
    if g.steps and jax.process_count() == 1:
      timing = {}
      new = generate(model, params, data.eval["prompts"], g.steps, jax.random.PRNGKey(config.seed),
                     g.temperature, g.top_k, g.top_p, data.eval["eos"], timing=timing)
      metrics["generate_tokens_per_s"] = timing["tokens_per_s"]
      tok = data.eval["tokenizer"]
      metrics["samples"] = [tok.decode(p) + " |> " + tok.decode(n)
                            for p, n in zip(data.eval["prompts"], new)]
    return metrics

  def validation(self, data, fraction, seed) -> TaskData:
    """The last ``fraction`` of the training sequences, as held-out text (contiguous, like
    the test split; ``seed`` is not needed)."""
    seqs = data.train["seq"]
    cut = int(round(len(seqs) * (1 - fraction)))
    if not 0 < cut < len(seqs):
      raise InputError(f"search.val_fraction={fraction}: {len(seqs)} training sequences "
                       "cannot be split so")
    held = np.concatenate([seqs[cut:, :-1].ravel(), seqs[-1, -1:]])
    words = data.eval["words"] and len(data.eval["tokenizer"].decode(held.tolist()).split())
    return dataclasses.replace(
        data, name=f"{data.name}[val]", train={"seq": seqs[:cut]},
        eval={**data.eval, "windows": corpus.windows(held, *data.eval["window"]), "words": words},
        identity=dict(data.identity, validation=fraction))

  def pretrained(self, spec: str) -> Optional[tuple[dict, Any]]:
    if spec == "smollm2" or spec.endswith(".gguf"):
      model_config, params, _ = gguf.read_gguf(gguf.smollm2_path() if spec == "smollm2"
                                               else spec)
      return dict(name="llama", **model_config), params
    if hf_llama.is_llama_folder(spec):
      cfg, params = hf_llama.load(spec)
      return dict(name="llama", **cfg.to_dict()), params
    return None

  def export(self, directory, model, params, data, config) -> None:
    if config.export.safetensors and model.name == "llama":
      hf_llama.export(params, directory, model.config, data.eval["tokenizer"], data.eval["eos"])
    else:
      with atomic(os.path.join(directory, "tokenizer.json")) as tmp:
        data.eval["tokenizer"].save(tmp)


TASKS.register("causal_lm")(CausalLM())
