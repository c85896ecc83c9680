"""The Llama family: the key/value cache reproduces the full forward pass, generation equals a
step-by-step argmax, sampling filters keep the tokens they should, text is packed and windowed
so every held-out target is scored once, the Hugging Face export reloads exactly, and the
causal LM task runs through the main entry point."""
import json
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax import models
from distill_jax.models.llama import empty_cache
from distill_jax.text import corpus, hf_llama
from distill_jax.text.generate import filter_logits, generate
from tests.helpers import command

TINY = dict(name="llama", hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
            intermediate_size=64, vocab_size=50)


@pytest.fixture(scope="module")
def tiny():
  model = models.build(TINY, {})
  return model, model.init(jax.random.PRNGKey(0), {"tokens": jnp.zeros((1, 4), jnp.int32)})


def next_logits(model, params, tokens, length=32):
  """The logits after ``tokens``: a causal model ignores the right padding (one shape, one
  compilation for every prefix)."""
  forward = jax.jit(lambda p, x: model.apply(p, {"tokens": x})[0]["logits"])
  padded = np.zeros((1, length), np.int32)
  padded[0, :len(tokens)] = tokens
  return np.asarray(forward(params, padded))[0, len(tokens) - 1]


def test_parameters_are_named_by_block_and_grouped_query_attention_has_fewer_kv_heads(tiny):
  model, params = tiny
  assert sorted(params) == ["embed", "final_norm", "layer_0", "layer_1"]   # tied: no lm_head
  attn = params["layer_0"]["attention"]
  assert attn["query"]["kernel"].shape == (32, 32)          # 4 heads of 8
  assert attn["key"]["kernel"].shape == (32, 16)            # 2 kv heads of 8
  untied = models.build(dict(TINY, tie_embeddings=False), {}).init(
      jax.random.PRNGKey(0), {"tokens": jnp.zeros((1, 4), jnp.int32)})
  assert untied["lm_head"]["kernel"].shape == (32, 50)


def test_the_cache_gives_the_full_forward_pass_token_by_token(tiny):
  model, params = tiny
  tokens = np.random.default_rng(0).integers(0, 50, (2, 10))
  full = np.asarray(model.apply(params, {"tokens": jnp.asarray(tokens)})[0]["logits"])
  cache = empty_cache(model.module.config, 2, 10)
  out, cache = model.module.apply({"params": params}, tokens[:, :6], cache=cache, index=0)
  steps = [out]
  for t in range(6, 10):
    out, cache = model.module.apply({"params": params}, tokens[:, t:t + 1], cache=cache, index=t)
    steps.append(out)
  np.testing.assert_allclose(np.concatenate(steps, 1), full, atol=1e-5)


def test_batched_greedy_generation_equals_step_by_step_argmax(tiny):
  model, params = tiny
  prompts = [[5, 6, 7], list(range(1, 19)), [9]]           # left padding to 32, 3 lengths
  got = generate(model, params, prompts, 5)
  for prompt, new in zip(prompts, got):
    seq = list(prompt)
    for _ in range(5):
      seq.append(int(np.argmax(next_logits(model, params, seq))))
    assert new == seq[len(prompt):]
  # top_k=1 sampling is greedy; eos cuts the continuation after it
  assert generate(model, params, prompts, 5, jax.random.PRNGKey(3), 1.0, top_k=1) == got
  cut = generate(model, params, prompts[:1], 5, eos_id=got[0][1])
  assert cut == [got[0][:got[0].index(got[0][1]) + 1]]


def test_top_k_and_top_p_keep_the_tokens_they_should():
  lp = jnp.log(jnp.array([[0.5, 0.3, 0.1, 0.06, 0.04]]))
  kept = lambda temperature, k, p: np.isfinite(np.asarray(filter_logits(lp, temperature, k, p)))[0]
  assert kept(1.0, 2, 1.0).tolist() == [True, True, False, False, False]
  assert kept(1.0, 0, 0.75).tolist() == [True, True, False, False, False]   # 0.5 < .75 <= .8
  assert kept(1.0, 0, 0.5).tolist() == [True, False, False, False, False]
  assert kept(1.0, 0, 1.0).all()
  np.testing.assert_allclose(filter_logits(lp, 2.0, 0, 1.0), lp / 2.0)
  # sampling follows the filtered distribution: only kept tokens ever appear
  draws = jax.random.categorical(jax.random.PRNGKey(0), filter_logits(lp, 1.0, 2, 1.0), shape=(
      2000, 1))
  assert set(np.unique(draws)) == {0, 1}
  assert abs(np.mean(draws == 0) - 0.5 / 0.8) < 0.04


def test_windows_score_every_held_out_target_exactly_once():
  ids = np.arange(100, 123)                                 # 23 tokens: 22 targets
  w = corpus.windows(ids, length=8, stride=3)
  scored = w["y"][w["weight"] > 0]
  assert sorted(scored.tolist()) == list(range(101, 123))
  assert w["tokens"].shape[1] == 8 and (w["y"] == w["tokens"] + 1).all()
  # with stride = length the windows do not overlap: each target sees 0..length-1 tokens
  w = corpus.windows(ids, length=11, stride=11)
  assert w["tokens"][:, 0].tolist() == [100, 111] and w["weight"].sum() == 22


def test_packing_overlaps_rows_by_one_token_and_tokens_are_cached(tmp_path, monkeypatch):
  seqs = corpus.pack(np.arange(20), 6)
  assert seqs.tolist() == [list(range(0, 7)), list(range(6, 13)), list(range(12, 19))]
  monkeypatch.setenv("DISTILL_JAX_CACHE", str(tmp_path))
  text = "to be or not to be\nthat is the question\n"
  tok = corpus.char_tokenizer(text)
  ids = corpus.tokenize(text, tok)
  assert tok.decode(ids.tolist()) == text and len(ids) == len(text)
  cached = list((tmp_path / "tokens").iterdir())
  assert len(cached) == 1
  np.save(cached[0], np.zeros(3, np.int32))                 # the cache is what is read back
  assert corpus.tokenize(text, tok).tolist() == [0, 0, 0]
  other = corpus.char_tokenizer(text + "!")                  # another tokenizer: another key
  assert len(corpus.tokenize(text, other)) == len(text)
  assert len(list((tmp_path / "tokens").iterdir())) == 2
  with pytest.raises(Exception, match="end-of-document"):
    corpus.tokenize(text, tok, documents="lines")


def test_hugging_face_export_reloads_to_the_same_model(tiny, tmp_path):
  model, params = tiny
  tok = corpus.char_tokenizer("abcdefghijklmnopqrstuvwxyz .,;:!?ABCDEFGHIJKLMNOPQRSTUVW")
  hf_llama.export(params, str(tmp_path), model.config, tok)
  config = json.loads((tmp_path / "config.json").read_text())
  assert config["model_type"] == "llama" and config["num_key_value_heads"] == 2
  assert config["tie_word_embeddings"] is True and config["num_hidden_layers"] == 2
  cfg, back = hf_llama.load(str(tmp_path))
  assert cfg.to_dict() == {k: v for k, v in model.config.items() if k != "name"}
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(params), back)
  from safetensors.numpy import load_file
  names = set(load_file(str(tmp_path / "model.safetensors")))
  assert "model.layers.1.self_attn.k_proj.weight" in names and "lm_head.weight" not in names
  with pytest.raises(Exception, match="unknown tensor 'model.layers.2"):
    hf_llama.hf_to_params({"model.layers.2.mlp.up_proj.weight": np.zeros((64, 32))}, cfg)


def test_a_char_level_lm_trains_distils_and_exports_through_main(tmp_path):
  rng = np.random.default_rng(0)
  words = "the king and queen shall speak to thee now my lord good night sweet prince".split()
  path = tmp_path / "text.txt"
  path.write_text("\n".join(" ".join(rng.choice(words, 12)) for _ in range(300)))
  other = tmp_path / "other.txt"
  other.write_text("to be or not to be that is the question " * 20)
  workdir = tmp_path / "run"
  # The same run covers on-policy distillation (every other step on the student's own
  # samples), block-influence pruning and the held-out measures beside perplexity.
  out = command("main", "--config=configs/shakespeare_char.py:smoke",
                f"--config.data.path={path}", f"--workdir={workdir}",
                "--config.distill.on_policy.fraction=0.5",
                "--config.distill.on_policy.prompt_length=4",
                "--config.student.init.strategy=influence",
                f"--config.data.other_eval=(('hamlet', '{other}'),)",
                "--config.data.other_eval_tokens=100",
                "--config.generate.quality.prompts=3", "--config.generate.quality.steps=5")
  assert out.returncode == 0, out.stderr[-3000:]
  summary = json.loads((workdir / "summary.json").read_text())
  for row in (summary["teacher"], summary["baseline"], summary["student"]):
    assert row["perplexity"] == pytest.approx(np.exp(-row["log_likelihood"]), rel=1e-6)
    assert 1.0 < row["perplexity"] < 30.0               # 26 distinct characters + space, \n
    assert 1.0 < row["perplexity_hamlet"] < 30.0 and 0.0 < row["sample_nll"] < 4.0
  assert "kl_teacher" not in summary["teacher"]           # no reference for the teacher itself
  for row in (summary["baseline"], summary["student"]):
    assert row["kl_teacher"] > 0.0 and row["train_tokens_per_s"] > 0.0
  assert len(summary["student"]["samples"]) == 2
  init = summary["student"]["init"]
  assert init["strategy"] == "influence" and len(init["teacher_layers"]) == 1
  logged = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  resampled = {r["step"]: r["resampled"] for r in logged
               if r.get("phase") == "student" and "resampled" in r}
  # logged every 2 steps: the value of steps 1, 3, 5 (0-based), all on-policy at 0.5
  assert resampled == {2: 1.0, 4: 1.0, 6: 1.0}
  export = workdir / "student" / "export"
  assert {"model.safetensors", "config.json", "tokenizer.json"} <= set(os.listdir(export))
  cfg, params = hf_llama.load(str(export))
  assert cfg.num_layers == 1 and cfg.hidden_size == 32


@pytest.mark.parametrize("overrides, message", [
    ({"data.tokenizer": "words"}, "data.tokenizer='words': use 'char', 'smollm2'"),
    ({"data.documents": "pages"}, "data.documents='pages': use 'raw' or 'lines'"),
    ({"data.documents": "lines"}, "needs an end-of-document token"),
    ({"generate.prompts": ("ROMEO",)}, "generate.prompts: 'ROMEO' has no token"),
    ({"generate.top_p": 0.0}, "0 < top_p <= 1"),
    ({"data.max_length": 5000}, "data.max_length=5000: the text has only"),
    ({"data.eval_stride": 99}, "data.eval_stride=99: must be in [1, data.eval_max_length=16]"),
    ({"student.mixup": 0.2}, "student.mixup=0.2: the causal_lm task's inputs cannot be mixed"),
    ({"data.path": "/nonexistent.txt"}, "data.path: text file '/nonexistent.txt' does not"),
])
def test_bad_lm_settings_are_refused_before_anything_is_written(tmp_path, overrides, message):
  from distill_jax import checks
  from distill_jax.config import apply_overrides, load
  from distill_jax.errors import InputError
  path = tmp_path / "text.txt"
  path.write_text("to be or not to be that is the question\n" * 40)
  config = apply_overrides(load("configs/shakespeare_char.py", "smoke"),
                           {"data.path": str(path), **overrides})
  with pytest.raises(InputError, match=re.escape(message)):
    checks.check(config)


def test_a_validation_split_is_the_tail_of_the_training_text(tmp_path):
  from distill_jax.config import apply_overrides, load
  from distill_jax.tasks import TASKS
  path = tmp_path / "text.txt"
  path.write_text("".join(chr(97 + i % 26) for i in range(2000)))
  config = apply_overrides(load("configs/shakespeare_char.py", "smoke"), {"data.path": str(path)})
  task = TASKS.get("causal_lm")
  data = task.load(config)
  val = task.validation(data, 0.25, seed=0)
  seqs = data.train["seq"]
  assert len(val.train["seq"]) == len(seqs) - round(len(seqs) * 0.25)
  held = val.eval["windows"]
  # every validation target comes after the last training row's inputs, each scored once
  first = len(val.train["seq"]) * 16
  assert held["weight"].sum() == len(seqs) * 16 - first
  np.testing.assert_array_equal(held["tokens"][0], seqs[len(val.train["seq"]), :16])
