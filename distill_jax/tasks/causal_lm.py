"""Causal language models (the Llama family): plain text tokenised, packed into sequences and
trained on next tokens; held out: perplexity over strided windows (per token and per word),
samples and generation speed. Teachers: the packaged SmolLM2-135M-Instruct GGUF
(``teacher.load="smollm2"``), any Llama GGUF file, or a Hugging Face Llama folder.
"""
import dataclasses
import os
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
import tokenizers

from distill_jax import inference
from distill_jax.errors import InputError, MissingInput
from distill_jax.files import atomic
from distill_jax.paths import fingerprint
from distill_jax.tasks import TASKS, Task, TaskData
from distill_jax.text import corpus, gguf, hf_llama
from distill_jax.text.generate import sample_ids, generate

PROMPT = 16          # tokens of held-out text that prompt each generation-quality sample


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


@dataclasses.dataclass(frozen=True)
class WithTeacher:
  """A student and its teacher as one model for ``inference.predict``: each held-out token's
  student log-probability and KL(teacher || student) of the next-token distributions."""
  student: Any
  teacher: Any

  def apply(self, params: tuple, batch: dict, **_) -> tuple[dict, dict]:
    s_out = self.student.apply(params[0], batch)[0]
    log_q = jax.nn.log_softmax(s_out["logits"])
    log_p = jax.nn.log_softmax(self.teacher.apply(params[1], batch)[0]["logits"])
    return {"token_logprob": s_out["token_logprob"],
            "token_kl": jnp.sum(jnp.exp(log_p) * (log_p - log_q), -1)}, {}


def held_out(ids: np.ndarray, text: str, window: tuple[int, int], count_words: bool) -> dict:
  """Perplexity windows ``(length, stride)`` over held-out token ids and the text's word count
  (per word only for word-level text, WikiText's convention; 0: per token only)."""
  return {"windows": corpus.windows(ids, *window),
          "words": len(text.split()) if count_words else 0}


def quality_prompts(held: np.ndarray, count: int) -> np.ndarray:
  """``count`` prompts of :data:`PROMPT` tokens, evenly spaced through the held-out ids."""
  if count and len(held) < PROMPT + 1:
    raise InputError(f"generate.quality: the held-out text has {len(held)} tokens, fewer "
                     f"than a {PROMPT}-token prompt")
  starts = np.linspace(0, len(held) - PROMPT - 1, count).astype(int) if count else []
  return np.stack([held[s:s + PROMPT] for s in starts]) if count else np.zeros((0, PROMPT))


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
    if d.train_sequences:
      if d.train_sequences > len(seqs):
        raise InputError(f"data.train_sequences={d.train_sequences}: the training text packs "
                         f"into only {len(seqs)} sequences of {d.max_length} tokens")
      seqs = seqs[:d.train_sequences]
    stride = d.eval_stride or max(d.eval_max_length // 2, 1)
    window, word_level = (d.eval_max_length, stride), d.tokenizer != "char"
    domains, other_ids = {}, []
    for i, pair in enumerate(d.other_eval):
      if len(pair) != 2 or not str(pair[0]).isidentifier():
        raise InputError(f"data.other_eval[{i}]={pair!r}: need (name, path), name a word")
      other = corpus.read_text(pair[1], f"data.other_eval[{i}]")
      ids_o = corpus.tokenize(other, tokenizer, d.documents, eos)[-d.other_eval_tokens:]
      other_ids.append(ids_o)
      domains[pair[0]] = held_out(ids_o, tokenizer.decode(ids_o.tolist()), window, word_level)
    prompts = [list(map(int, p)) for p in ([tokenizer.encode(s, add_special_tokens=False).ids
                                            for s in config.generate.prompts]
                                           or [held[:16], held[len(held) // 2:][:16]])]
    return TaskData(
        os.path.basename(d.path), {"seq": seqs},
        {**held_out(held, held_text, window, word_level),
         "window": window, "tokenizer": tokenizer, "prompts": prompts,
         "eos": eos, "domains": domains,
         "quality": quality_prompts(held, config.generate.quality.prompts)},
        {"vocab_size": tokenizer.get_vocab_size()},
        {"source": d.source, "path": d.path, "eval_path": d.eval_path,
         "tokenizer": corpus.tokenizer_id(tokenizer), "documents": d.documents,
         "max_length": d.max_length, "eval_max_length": d.eval_max_length, "stride": stride,
         "test_fraction": d.test_fraction, "train_sequences": d.train_sequences,
         "other_eval": [list(p) for p in d.other_eval],
         "sha256": fingerprint([ids, held] + other_ids)},
        example={"tokens": seqs[:2, :-1], "y": seqs[:2, 1:]}, prepare=split_sequences)

  def check(self, config, data) -> None:
    if config.generate.steps < 0 or config.generate.temperature < 0 or not (
        0 < config.generate.top_p <= 1) or config.generate.top_k < 0:
      raise InputError("generate: need steps >= 0, temperature >= 0, top_k >= 0 and "
                       "0 < top_p <= 1")
    q, o = config.generate.quality, config.distill.on_policy
    if q.prompts < 0 or q.steps < 0 or q.temperature < 0:
      raise InputError(f"generate.quality: need prompts >= 0, steps >= 0, temperature >= 0 "
                       f"(got {q.prompts}, {q.steps}, {q.temperature})")
    if o.fraction and o.prompt_length >= config.data.max_length:
      raise InputError(f"distill.on_policy.prompt_length={o.prompt_length} must be below "
                       f"data.max_length={config.data.max_length}")

  agreement_output = "next_token"

  def tokens_per_example(self, data) -> int:
    return data.train["seq"].shape[1] - 1

  def agreement(self, student_outputs: np.ndarray, teacher_outputs: np.ndarray) -> float:
    """Label-free: the fraction of training positions where the greedy next tokens agree."""
    return float(np.mean(student_outputs == teacher_outputs))

  def reference(self, model, params, data, mesh, config) -> dict:
    """The teacher itself: fidelity (KL) and sample scores need its distributions."""
    return {"model": model, "params": params}

  def evaluate(self, model, params, data, mesh, config, reference=None) -> dict:
    """Held-out log-likelihood and perplexity (per token and per word), the same on each
    ``data.other_eval`` domain; with a ``reference`` teacher, ``kl_teacher`` (mean
    KL(teacher || model) over the held-out tokens); ``sample_nll``: the mean negative
    log-likelihood the teacher (without one: the model itself) gives the model's sampled
    continuations of held-out prompts; samples and generation speed."""
    metrics = self.perplexity(model, params, data.eval, mesh, config, reference)
    for name, domain in data.eval["domains"].items():
      other = self.perplexity(model, params, domain, mesh, config)
      metrics[f"perplexity_{name}"] = other["perplexity"]
      if "word_perplexity" in other:
        metrics[f"word_perplexity_{name}"] = other["word_perplexity"]
    q = config.generate.quality
    if len(data.eval["quality"]) and q.steps:
      metrics["sample_nll"] = self.sample_nll(model, params, data.eval["quality"], mesh, config,
                                              reference)
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

  def perplexity(self, model, params, held: dict, mesh, config, reference=None) -> dict:
    """Log-likelihood, perplexity (per token; per word when ``held["words"]``) over
    ``held["windows"]``, and ``kl_teacher`` against a ``reference``."""
    w = held["windows"]
    arrays = {k: w[k] for k in ("tokens", "y")}
    if reference is None:
      out = inference.predict(model, params, arrays, mesh, config.eval_batch_size,
                              outputs=("token_logprob",))
    else:
      out = inference.predict(WithTeacher(model, reference["model"]),
                              (params, reference["params"]), arrays, mesh, config.eval_batch_size,
                              outputs=("token_logprob", "token_kl"))
    weight = w["weight"]
    nll, count = -float(np.sum(out["token_logprob"] * weight)), float(np.sum(weight))
    metrics = {"log_likelihood": -nll / count, "perplexity": float(np.exp(nll / count))}
    if held["words"]:
      metrics["word_perplexity"] = float(np.exp(nll / held["words"]))
    if "token_kl" in out:
      metrics["kl_teacher"] = float(np.sum(out["token_kl"] * weight) / count)
    return metrics

  def sample_nll(self, model, params, prompts: np.ndarray, mesh, config,
                 reference=None) -> float:
    """Mean per-token NLL, under the teacher (else the model), of ``generate.quality.steps``
    tokens the model samples after each prompt."""
    q = config.generate.quality
    new = sample_ids(model.module, params, jnp.asarray(prompts, jnp.int32),
                    jnp.ones(prompts.shape, jnp.int32), jax.random.PRNGKey(config.seed),
                    np.float32(q.temperature), np.int32(0), np.float32(1.0), steps=q.steps)
    full = np.concatenate([prompts, np.asarray(new)], 1).astype(np.int32)
    scorer, scorer_params = ((reference["model"], reference["params"]) if reference
                             else (model, params))
    logprob = inference.predict(scorer, scorer_params, {"tokens": full[:, :-1], "y": full[:, 1:]},
                                mesh, config.eval_batch_size, outputs=("token_logprob",))
    return -float(np.mean(logprob["token_logprob"][:, PROMPT - 1:]))

  def sampler(self, model, config):
    """Training sequences replaced by the student's continuations of their first
    ``distill.on_policy.prompt_length`` tokens (key/value cache, one jitted scan)."""
    o = config.distill.on_policy

    def resample(params, batch, rng):
      seq = jnp.concatenate([batch["tokens"], batch["y"][:, -1:]], axis=1)
      prompt = seq[:, :o.prompt_length]
      new = sample_ids(model.module, params, prompt, jnp.ones_like(prompt), rng,
                      jnp.float32(o.temperature), jnp.int32(o.top_k), jnp.float32(o.top_p),
                      steps=seq.shape[1] - o.prompt_length)
      full = jnp.concatenate([prompt, new.astype(seq.dtype)], axis=1)
      return dict(batch, tokens=full[:, :-1], y=full[:, 1:])
    return resample

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
        eval={**data.eval, "windows": corpus.windows(held, *data.eval["window"]), "words": words,
              "quality": quality_prompts(held, len(data.eval["quality"]))},
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
