"""Sentence-embedding distillation: loss terms against hand values, a step that learns,
recombination of BERT layers by the generic engine, and the job's input checks."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax import train
from distill_jax.models.bert import BertConfig, build_encoder, init_params
from distill_jax.paths import flatten
from distill_jax.text import distill, pipeline

TEACHER = BertConfig(vocab_size=50, hidden_size=16, num_layers=4, num_heads=2,
                     intermediate_size=32, max_position=16, hidden_dropout=0.0,
                     attention_dropout=0.0)
STUDENT = TEACHER.replace(num_layers=2)


def _batch(n=8, length=10, seed=0):
  rng = np.random.default_rng(seed)
  lengths = rng.integers(3, length + 1, n)
  mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.int32)
  ids = rng.integers(1, TEACHER.vocab_size, (n, length)).astype(np.int32) * mask
  return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def test_embedding_terms_match_hand_values():
  s, t = jnp.array([[3.0, 4.0]]), jnp.array([[0.0, 4.0]])
  assert float(distill.embedding_mse(s, t)) == pytest.approx(9.0)
  assert float(distill.embedding_cosine(s, t)) == pytest.approx(1 - 4 / 5, rel=1e-6)


def test_hidden_mse_ignores_padding_tokens():
  t = jnp.zeros((1, 3, 2))
  s = jnp.array([[[1.0, 1.0], [3.0, 3.0], [100.0, 100.0]]])   # the third token is padding
  got = distill.hidden_mse(s, t, jnp.array([[1, 1, 0]]))
  assert float(got) == pytest.approx((1 + 9) / 2)


def test_relation_kl_is_zero_for_equal_and_matches_hand_value():
  # one head, two real tokens, one dimension: A = [[1], [0]] -> scores [[1, 0], [0, 0]];
  # B = [[0], [0]] -> uniform rows. KL(softmax(1, 0) || (1/2, 1/2)) for row 0, 0 for row 1.
  a, b = jnp.array([[[1.0], [0.0]]]), jnp.zeros((1, 2, 1))
  mask = jnp.array([[1, 1]])
  assert float(distill.relation_kl(a, a, mask, heads=1)) == pytest.approx(0.0, abs=1e-7)
  p = 1 / (1 + math.exp(-1))
  row0 = p * math.log(2 * p) + (1 - p) * math.log(2 * (1 - p))
  got = distill.relation_kl(b, a, mask, heads=1)        # (student, teacher)
  assert float(got) == pytest.approx(row0 / 2, rel=1e-5)


@pytest.mark.parametrize("terms", [dict(embedding_cosine_weight=1.0),
                                   dict(hidden_weight=1.0, layer_map=(1, 3)),
                                   dict(relation_weight=1.0)])
def test_a_distillation_step_lowers_the_loss(terms):
  teacher, student = build_encoder(TEACHER), build_encoder(STUDENT)
  tp = init_params(TEACHER, jax.random.PRNGKey(0))
  sp = init_params(STUDENT, jax.random.PRNGKey(1))
  step = jax.jit(distill.make_text_train_step(
      student.apply, teacher.apply, num_student_layers=2, num_teacher_layers=4,
      relation_heads=2, **terms))
  state = train.create_state(student, sp, train.make_optimizer(3e-3, 40), jax.random.PRNGKey(2))
  batch = _batch()
  losses = []
  for _ in range(25):
    state, metrics = step(state, batch, tp)
    losses.append(float(metrics["loss"]))
  assert losses[-1] < 0.7 * losses[0], losses


def test_cached_teacher_embedding_gives_the_same_loss_as_the_online_teacher():
  teacher, student = build_encoder(TEACHER), build_encoder(STUDENT)
  tp = init_params(TEACHER, jax.random.PRNGKey(0))
  sp = init_params(STUDENT, jax.random.PRNGKey(1))
  batch = _batch()
  from distill_jax.models.bert import mean_pool
  out = teacher.apply({"params": tp}, batch["input_ids"], batch["attention_mask"],
                      batch["token_type_ids"])
  cached = dict(batch, teacher_embedding=np.asarray(mean_pool(out.last_hidden_state,
                                                              batch["attention_mask"])))
  state = train.create_state(student, sp, train.make_optimizer(1e-3, 10), jax.random.PRNGKey(2))
  online = distill.make_text_train_step(student.apply, teacher.apply)(state, batch, tp)[1]
  offline = distill.make_text_train_step(student.apply, None)(state, cached, None)[1]
  np.testing.assert_allclose(offline["loss"], online["loss"], rtol=1e-5)


def test_bert_layers_recombine_with_the_generic_engine():
  tp = init_params(TEACHER, jax.random.PRNGKey(0))
  sample = _batch(4)
  params, report = pipeline.recombined(TEACHER, tp, STUDENT, "select", {"layers": (1, 3)},
                                       pipeline.BERT_RULES, sample, seed=0)
  f, t = flatten(params), flatten(tp)
  np.testing.assert_array_equal(f["encoder/layer_0/attention/query/kernel"],
                                t["encoder/layer_1/attention/query/kernel"])
  np.testing.assert_array_equal(f["encoder/layer_1/output/kernel"], t["encoder/layer_3/output/kernel"])
  np.testing.assert_array_equal(f["embeddings/word_embeddings/embedding"],
                                t["embeddings/word_embeddings/embedding"])
  assert report["reused_params"] == report["student_params"]
  # CKA needs each layer's output: found under encoder/layer_i, not a sub-module's
  params, report = pipeline.recombined(TEACHER, tp, STUDENT, "similarity", {"mode": "drop"},
                                       pipeline.BERT_RULES, sample, seed=0)
  assert report["reused_params"] == report["student_params"]


def test_read_sentences_takes_both_columns_of_an_sts_csv_and_dedupes(tmp_path):
  csv = tmp_path / "sts.csv"
  csv.write_text("g\tf\t2012\t1\t5.0\tA cat.\tA dog.\ng\tf\t2012\t2\t1.0\tA dog.\tA bird.\n")
  assert pipeline.read_sentences(str(csv)) == ["A cat.", "A dog.", "A bird."]
  txt = tmp_path / "s.txt"
  txt.write_text("one\n\ntwo\none\n")
  assert pipeline.read_sentences(str(txt)) == ["one", "two"]
  with pytest.raises(FileNotFoundError, match="missing.txt"):
    pipeline.read_sentences(str(tmp_path / "missing.txt"))


def test_trim_cuts_padding_to_a_multiple_of_16():
  batch = {"input_ids": np.ones((2, 128), np.int32), "attention_mask": np.zeros((2, 128), np.int32),
           "token_type_ids": np.zeros((2, 128), np.int32), "teacher_embedding": np.ones((2, 384))}
  batch["attention_mask"][0, :20] = 1
  out = pipeline.trim(batch)
  assert out["input_ids"].shape == (2, 32) and out["teacher_embedding"].shape == (2, 384)


def test_embedding_cache_matches_the_teacher_and_is_rebuilt_when_stale(tmp_path):
  from distill_jax.models.bert import mean_pool
  tp = init_params(TEACHER, jax.random.PRNGKey(0))
  tokens = _batch(6)
  cached = pipeline.embedding_cache(str(tmp_path), TEACHER, tp, tokens, batch_size=4)
  out = build_encoder(TEACHER).apply({"params": tp}, tokens["input_ids"],
                                     tokens["attention_mask"], tokens["token_type_ids"])
  want = mean_pool(out.last_hidden_state, tokens["attention_mask"])
  np.testing.assert_allclose(cached, want, rtol=1e-5, atol=1e-6)
  key_file = tmp_path / "teacher_cache" / "key.json"
  first_key = key_file.read_text()
  again = pipeline.embedding_cache(str(tmp_path), TEACHER, tp, tokens, batch_size=4)
  np.testing.assert_array_equal(again, cached)                 # read back, same key
  other = _batch(6, seed=1)                                     # other sentences: stale
  rebuilt = pipeline.embedding_cache(str(tmp_path), TEACHER, tp, other, batch_size=4)
  assert key_file.read_text() != first_key and not np.allclose(rebuilt, cached)
