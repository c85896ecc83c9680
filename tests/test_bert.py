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
from safetensors.numpy import load_file

from distill_jax import models
from distill_jax.models.bert import BertConfig, init_params
from distill_jax.paths import flatten, unflatten
from distill_jax.text import minilm, sts, weights
from distill_jax.tasks.sentence_embedding import embed
from distill_jax.text.tokenize import TextTokenizer

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
TINY = BertConfig(vocab_size=30522, hidden_size=32, num_layers=2, num_heads=4,
                  intermediate_size=64, max_position=64, with_pooler=False)


@pytest.fixture(scope="module")
def teacher():
  """(BertConfig, params, tokenizer, Model) of the packaged all-MiniLM-L6-v2."""
  model_config, params, tokenizer_path = minilm.load_minilm()
  config = BertConfig.from_dict({k: v for k, v in model_config.items() if k != "name"})
  return config, params, TextTokenizer(tokenizer_path), models.build(model_config, {})


@pytest.fixture(scope="module")
def hf_tensors():
  return load_file(os.path.join(minilm.minilm_path(), "model.safetensors"))


def read_sentences():
  with open(os.path.join(FIXTURES, "minilm_sentences.txt"), encoding="utf-8") as f:
    return [line.rstrip("\n") for line in f if line.rstrip("\n")]


# --- weights -------------------------------------------------------------------------------

def test_import_then_export_is_bit_identical(teacher, hf_tensors, tmp_path):
  config, params, *_ = teacher
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
  config, params, *_ = teacher
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
  config, params, tokenizer, model = teacher
  sentences = read_sentences()
  ref = np.load(os.path.join(FIXTURES, "minilm_reference.npz"))
  digest = hashlib.sha256("\n".join(sentences).encode("utf-8")).hexdigest()
  assert str(ref["sentences_sha256"]) == digest, "fixture sentences changed: rerun reference/"
  assert len(sentences) >= 200
  assert (ref["num_tokens"] > int(ref["max_seq_length"])).sum() >= 2   # truncation exercised
  ours = embed(model, params, tokenizer, sentences, batch_size=16,
                      max_length=int(ref["max_seq_length"]))
  cosines = (ours * ref["embeddings"]).sum(axis=1)
  worst = int(np.argmin(cosines))
  assert cosines.min() >= 0.9999, (cosines.min(), sentences[worst])
  np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_outputs_padding_invariant_and_attention_captured():
  model = models.build(dict(name="bert", **TINY.to_dict()), {})
  params = jax.jit(init_params, static_argnums=0)(TINY, jax.random.PRNGKey(0))
  ids = jnp.array([[101, 2023, 2003, 102]], jnp.int32)
  short = {"input_ids": ids, "attention_mask": jnp.ones_like(ids), "token_type_ids": 0 * ids}
  long = {k: jnp.pad(v, ((0, 0), (0, 4))) for k, v in short.items()}
  apply = jax.jit(lambda p, b: model.apply(p, b, capture=True))
  (out_s, feats_s), (out_l, feats_l) = apply(params, short), apply(params, long)
  assert out_s["pooled"].shape == (1, TINY.hidden_size)
  np.testing.assert_allclose(out_l["pooled"], out_s["pooled"], atol=1e-5)   # mean over tokens
  np.testing.assert_allclose(feats_l["encoder/layer_1"][:, :4], feats_s["encoder/layer_1"],
                             atol=1e-5)
  probs = feats_l["encoder/layer_1/attention/1"]
  assert probs.shape == (1, TINY.num_heads, 8, 8)
  assert float(jnp.abs(probs[..., 4:]).max()) == 0.0   # padding gets no attention


def test_tokenizer_overrides_the_files_128_and_pads(teacher):
  tokenizer = teacher[2]
  long_text = "word " * 300
  batch = tokenizer.encode([long_text, "a b"], max_length=256)
  assert batch["input_ids"].shape == (2, 256) and batch["input_ids"].dtype == np.int32
  assert batch["attention_mask"][1].sum() == 4 and batch["input_ids"][0, -1] == 102   # [SEP]
  assert tokenizer.encode(["a b"], 40, padding="max_length")["input_ids"].shape == (1, 40)


# --- STS -----------------------------------------------------------------------------------

def test_spearman_with_ties_matches_hand_ranks():
  # by hand: average ranks of x = (1, 2, 3, 4) and y = (1, 2.5, 2.5, 4), Pearson of the ranks
  rx, ry = np.array([1, 2, 3, 4.0]), np.array([1, 2.5, 2.5, 4])
  want = ((rx - 2.5) * (ry - 2.5)).sum() / np.sqrt(((rx - 2.5) ** 2).sum() * ((ry - 2.5) ** 2).sum())
  assert sts.spearman([1, 2, 3, 4], [0.1, 0.5, 0.5, 0.9]) == pytest.approx(want, abs=1e-12)
  assert sts.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
  with pytest.raises(ValueError, match="NaN or inf"):
    sts.spearman([1, 2, float("nan")], [1, 2, 3])


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


# --- exports -----------------------------------------------------------------------------

def test_a_student_export_reloads_and_evaluates_through_the_cli(tmp_path):
  """The export of a text student (Orbax + model.json + safetensors + tokenizer) reloads as
  itself, as a HF folder, and scores through ``distill_jax.evaluate``."""
  from distill_jax import runner
  from distill_jax.checkpoint import save_export
  from distill_jax.tasks import TASKS
  from distill_jax.config import load
  from tests.helpers import ROOT, command
  config = load(os.path.join(ROOT, "configs", "minilm_l6_to_l3.py"), "smoke")
  task = TASKS.get("sentence_embedding")
  data = task.load(config)
  tiny = dict(name="bert", **TINY.to_dict())
  model = models.build(tiny, {})
  params = init_params(TINY, jax.random.PRNGKey(1))
  export = str(tmp_path / "export")
  save_export(export, model, params, dict(data.info), dict(data.example))
  task.export(export, model, params, data, config)
  loaded, restored = runner.load_model(task, export, data)
  assert loaded.config == model.config
  jax.tree.map(np.testing.assert_array_equal, restored, params)
  os.remove(os.path.join(export, "model.json"))                # the HF layout alone
  hf_model, hf_params = runner.load_model(task, export, data)
  assert hf_model.config["num_layers"] == 2
  jax.tree.map(np.testing.assert_array_equal, hf_params, params)
  with pytest.raises(ValueError, match="embeddings/word_embeddings/embedding"):
    save_export(str(tmp_path / "t"), models.build(dict(tiny, hidden_size=64, num_heads=4), {}),
                params, {}, dict(data.example))
  out = command("evaluate", "--config=configs/minilm_l6_to_l3.py:smoke", f"--model={export}")
  assert out.returncode == 0, out.stderr[-2000:]
  assert -100.0 <= float(out.stdout.strip().splitlines()[-1]) <= 100.0
