"""The Flax BERT port, HF weight import/export, tokenisation, STS scoring, saved students.

Parity is against tests/fixtures/minilm_reference.npz, written by
reference/minilm_reference.py with sentence-transformers (PyTorch) from the same weights.
"""
import hashlib
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from safetensors.numpy import load_file

from distill_jax.models.bert import BertConfig, build_encoder, init_params
from distill_jax.paths import flatten, unflatten
from distill_jax.text import minilm, sts, weights
from distill_jax.text.student import load_student, load_text_model, save_student

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
TINY = BertConfig(vocab_size=30522, hidden_size=32, num_layers=2, num_heads=4,
                  intermediate_size=64, max_position=64, with_pooler=False)


@pytest.fixture(scope="module")
def teacher():
  return minilm.load_minilm()


@pytest.fixture(scope="module")
def hf_tensors():
  return load_file(os.path.join(minilm.minilm_path(), "model.safetensors"))


def read_sentences():
  with open(os.path.join(FIXTURES, "minilm_sentences.txt"), encoding="utf-8") as f:
    return [line.rstrip("\n") for line in f if line.rstrip("\n")]


# --- weights -------------------------------------------------------------------------------

def test_import_then_export_is_bit_identical(teacher, hf_tensors, tmp_path):
  config, params, _ = teacher
  assert (config.num_layers, config.hidden_size, config.num_heads) == (6, 384, 12)
  assert flatten(params)["encoder/layer_0/attention/query/kernel"].shape == (384, 384)
  exported = weights.params_to_hf_tensors(params)
  assert sorted(exported) == sorted(hf_tensors)
  for name, value in hf_tensors.items():
    assert exported[name].dtype == value.dtype and exported[name].shape == value.shape, name
    assert exported[name].tobytes() == value.tobytes(), name
  path = weights.export_safetensors(params, str(tmp_path / "out"), config)
  again = load_file(path)
  assert all(again[k].tobytes() == v.tobytes() for k, v in hf_tensors.items())
  reloaded, config2 = weights.load_safetensors(str(tmp_path / "out"))
  assert config2 == config


def test_import_errors_name_the_tensors(teacher, hf_tensors):
  config = teacher[0]
  bad = dict(hf_tensors)
  bad["encoder.layer.2.attention.self.key.weight"] = np.zeros((384, 380), np.float32)
  bad["encoder.layer.0.attention.self.rotary.weight"] = np.zeros((4,), np.float32)
  bad["encoder.layer.9.output.dense.bias"] = np.zeros((384,), np.float32)
  del bad["encoder.layer.1.output.LayerNorm.weight"]
  with pytest.raises(ValueError) as e:
    weights.hf_tensors_to_params(bad, config)
  text = str(e.value)
  assert "'encoder.layer.2.attention.self.key.weight' has shape (384, 380)" in text
  assert "(384, 384)" in text
  assert "unknown tensor 'encoder.layer.0.attention.self.rotary.weight'" in text
  assert "'encoder.layer.9.output.dense.bias' does not fit the config (6 layers)" in text
  assert "missing tensor(s): encoder.layer.1.output.LayerNorm.weight" in text
  with pytest.raises(ValueError, match="unknown parameter 'head/kernel'"):
    weights.params_to_hf_tensors(dict(teacher[1], head={"kernel": np.zeros((2, 2))}))


def test_student_layers_export_renumbered(teacher, tmp_path):
  config, params, _ = teacher
  flat = flatten(params)
  keep = ("layer_0/", "layer_2/", "layer_4/")
  student = unflatten({k: v for k, v in flat.items()
                       if "encoder/" not in k or any(s in k for s in keep)})
  weights.export_safetensors(student, str(tmp_path), config)
  names = load_file(str(tmp_path / "model.safetensors"))
  assert {n.split(".")[2] for n in names if n.startswith("encoder.")} == {"0", "1", "2"}
  assert json.load(open(tmp_path / "config.json"))["num_hidden_layers"] == 3
  params3, config3 = weights.load_safetensors(str(tmp_path))
  assert config3.num_layers == 3
  np.testing.assert_array_equal(flatten(params3)["encoder/layer_1/output/kernel"],
                                flat["encoder/layer_2/output/kernel"])


# --- the model -----------------------------------------------------------------------------

def test_parity_with_sentence_transformers(teacher):
  config, params, tokenizer = teacher
  sentences = read_sentences()
  ref = np.load(os.path.join(FIXTURES, "minilm_reference.npz"))
  digest = hashlib.sha256("\n".join(sentences).encode("utf-8")).hexdigest()
  assert str(ref["sentences_sha256"]) == digest, "fixture sentences changed: rerun reference/"
  assert len(sentences) >= 200
  assert (ref["num_tokens"] > int(ref["max_seq_length"])).sum() >= 2   # truncation exercised
  ours = minilm.embed(params, config, tokenizer, sentences, batch_size=16,
                      max_length=int(ref["max_seq_length"]))
  cosines = (ours * ref["embeddings"]).sum(axis=1)
  worst = int(np.argmin(cosines))
  assert cosines.min() >= 0.9999, (cosines.min(), sentences[worst])
  np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_outputs_padding_invariant_and_shaped():
  params = jax.jit(init_params, static_argnums=0)(TINY, jax.random.PRNGKey(0))
  apply = jax.jit(build_encoder(TINY).apply, static_argnames=("output_hidden_states",
                                                                 "output_attentions"))
  ids = jnp.array([[101, 2023, 2003, 102]], jnp.int32)
  padded = jnp.pad(ids, ((0, 0), (0, 4)))
  mask = jnp.pad(jnp.ones_like(ids), ((0, 0), (0, 4)))
  short = apply({"params": params}, ids, output_hidden_states=True, output_attentions=True)
  long = apply({"params": params}, padded, mask, output_attentions=True)
  assert len(short.hidden_states) == TINY.num_layers + 1 and short.pooled is None
  assert short.attentions[0].shape == (1, TINY.num_heads, 4, 4)
  np.testing.assert_allclose(long.last_hidden_state[:, :4], short.last_hidden_state, atol=1e-5)
  assert float(jnp.abs(long.attentions[1][..., 4:]).max()) == 0.0   # padding gets no attention
  sentence = jax.jit(build_encoder(TINY, sentence=True).apply)({"params": params}, padded, mask)
  assert sentence.shape == (1, TINY.hidden_size)


def test_tokenizer_overrides_the_files_128_and_pads(teacher):
  tokenizer = teacher[2]
  long_text = "word " * 300
  batch = tokenizer.encode([long_text, "a b"], max_length=256)
  assert batch["input_ids"].shape == (2, 256) and batch["input_ids"].dtype == np.int32
  assert batch["attention_mask"][1].sum() == 4 and batch["input_ids"][0, -1] == 102   # [SEP]
  assert tokenizer.encode(["a b"], 256, pad_to_multiple_of=16)["input_ids"].shape == (1, 16)
  assert tokenizer.encode(["a b"], 40, padding="max_length")["input_ids"].shape == (1, 40)


# --- STS -----------------------------------------------------------------------------------

def test_spearman_matches_scipy_with_ties():
  rng = np.random.default_rng(0)
  x = rng.integers(0, 5, 40).astype(float)          # many ties
  y = x + rng.integers(0, 3, 40)
  assert sts.spearman(x, y) == pytest.approx(scipy.stats.spearmanr(x, y).statistic, abs=1e-12)
  np.testing.assert_array_equal(sts.rankdata([3, 1, 3, 2, 3]),
                                scipy.stats.rankdata([3, 1, 3, 2, 3]))
  assert sts.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)


def test_read_sts_csv_takes_seven_columns(tmp_path):
  path = tmp_path / "sts.csv"
  path.write_text('main-news\tMSRpar\t2012test\t0001\t4.250\tHe said "yes".\tHe said yes.\n'
                  "main-forum\tdeft\t2014\t0002\t0.5\tA cat.\tStocks fell.\textra\tfields\n",
                  encoding="utf-8")
  pairs = sts.read_sts_csv(str(path))
  assert pairs.sentence1 == ['He said "yes".', "A cat."]
  assert pairs.sentence2 == ["He said yes.", "Stocks fell."]
  np.testing.assert_array_equal(pairs.scores, [4.25, 0.5])
  (tmp_path / "bad.csv").write_text("a\tb\tc\n")
  with pytest.raises(ValueError, match="bad.csv:1: 3 tab-separated fields"):
    sts.read_sts_csv(str(tmp_path / "bad.csv"))


def test_sts_score_of_an_oracle_encoder():
  pairs = sts.StsPairs(["a", "b", "c"], ["x", "y", "z"], np.array([0.0, 2.5, 5.0]))
  angle = {"a": 1.5, "b": 0.8, "c": 0.1, "x": 0.0, "y": 0.0, "z": 0.0}
  embed = lambda ss: np.array([[np.cos(angle[s]), np.sin(angle[s])] for s in ss])
  assert sts.sts_score(embed, pairs) == pytest.approx(100.0)


# --- saved students ------------------------------------------------------------------------

def test_save_and_load_student(tmp_path, capsys):
  params = init_params(TINY, jax.random.PRNGKey(1))
  save_student(str(tmp_path / "s"), params, TINY)
  restored, config = load_student(str(tmp_path / "s"))
  assert config == TINY
  assert jax.tree.structure(restored) == jax.tree.structure(params)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(restored)):
    np.testing.assert_array_equal(a, b)
  with pytest.raises(ValueError, match="embeddings/word_embeddings/embedding"):
    save_student(str(tmp_path / "t"), params, TINY.replace(hidden_size=64))
  # the CLI end to end on a saved student (the teacher's tokenizer) and a tiny CSV
  csv = tmp_path / "sts.csv"
  csv.write_text("".join(f"g\tf\t2012\t{i}\t{i % 5}.0\tA man plays {i}.\tA dog runs {i}.\n"
                         for i in range(6)), encoding="utf-8")
  from distill_jax import sts_eval
  assert sts_eval.main([f"--model={tmp_path / 's'}", f"--data={csv}", "--max_length=32"]) == 0
  last = capsys.readouterr().out.strip().splitlines()[-1]
  assert -100.0 <= float(last) <= 100.0
  assert load_text_model(str(tmp_path / "s"))[0] == TINY
