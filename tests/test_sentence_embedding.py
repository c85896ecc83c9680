"""Sentence embeddings as a task of the one runner: BERT through the main train step with the
text terms, the teacher-output cache of pooled vectors, BERT layers recombined by the generic
engine, the task's data reading."""
import jax
import ml_collections
import numpy as np
import pytest

from distill_jax import choose, losses, models, runner, train
from distill_jax.config import defaults
from distill_jax.models.bert import mean_pool
from distill_jax.paths import flatten
from distill_jax.tasks import TaskData
from distill_jax.tasks.sentence_embedding import read_sentences, trim

TEACHER = dict(name="bert", vocab_size=50, hidden_size=16, num_layers=4, num_heads=2,
               intermediate_size=32, max_position=16, hidden_dropout=0.0, attention_dropout=0.0)
RULES = (("regex", r"embeddings/.*", "embeddings"), ("depth", r"encoder/layer_(\d+)"),
         ("regex", r"pooler/.*", "pooler"))


def _batch(n=8, length=10, seed=0):
  rng = np.random.default_rng(seed)
  lengths = rng.integers(3, length + 1, n)
  mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.int32)
  ids = rng.integers(1, TEACHER["vocab_size"], (n, length)).astype(np.int32) * mask
  return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def _models():
  teacher = models.build(TEACHER, {})
  student = models.build(dict(TEACHER, num_layers=2), {})
  return (teacher, teacher.init(jax.random.PRNGKey(0), _batch()),
          student, student.init(jax.random.PRNGKey(1), _batch()))


@pytest.mark.parametrize("terms", [
    (("embedding_cosine", 1.0, {}),),
    (("embedding_mse", 1.0, {}), ("hint", 1.0, {"pairs": (("encoder/layer_1", "encoder/layer_0"),
                                                          ("encoder/layer_3", "encoder/layer_1"))})),
    (("relation", 1.0, {"heads": 2, "pairs": tuple(
        (f"encoder/layer_3/attention/{p}", f"encoder/layer_1/attention/{p}")
        for p in ("query", "key", "value"))}),)])
def test_bert_trains_on_the_text_terms_through_the_main_step(terms):
  teacher, tp, student, sp = _models()
  bound = losses.bind(terms, "distill.terms")
  from distill_jax import features
  resolved, proj = features.setup(bound, teacher, tp, student, sp, _batch(), jax.random.PRNGKey(2))
  step = jax.jit(train.make_train_step(student, bound, teacher, features=resolved))
  state = train.TrainState.create(sp, train.make_optimizer(3e-3, 40), jax.random.PRNGKey(2), proj)
  batch, seen = _batch(), []
  for _ in range(25):
    state, metrics = step(state, batch, tp)
    seen.append(float(metrics["loss"]))
  assert seen[-1] < 0.7 * seen[0], seen


def test_cached_pooled_vectors_give_the_same_loss_as_the_online_teacher():
  teacher, tp, student, sp = _models()
  batch = _batch()
  out = teacher.module.apply({"params": tp}, *[batch[k] for k in teacher.family.inputs])
  cached = dict(batch, teacher_pooled=np.asarray(mean_pool(out.last_hidden_state,
                                                          batch["attention_mask"])))
  bound = losses.bind((("embedding_mse", 1.0, {}), ("embedding_cosine", 3.0, {})), "terms")
  step = train.make_train_step(student, bound, teacher)
  state = train.TrainState.create(sp, train.make_optimizer(1e-3, 10), jax.random.PRNGKey(2))
  online = step(state, batch, tp)[1]
  offline = step(state, cached, None)[1]
  np.testing.assert_allclose(offline["loss"], online["loss"], rtol=1e-5)


def _run(tmp_path, tokens):
  c = defaults()
  c.task, c.batch_size, c.eval_batch_size = "sentence_embedding", 4, 4
  c.distill.cache = "full"
  c.student.init = ml_collections.ConfigDict(dict(c.student.init, rules=RULES, strategy="select"))
  c.student.init.num_examples = 4
  data = TaskData("toy", tokens, {}, {}, {"source": "toy"}, example=_batch(2), prepare=trim)
  return runner.start(c, str(tmp_path), data)


def test_bert_layers_recombine_with_the_generic_engine(tmp_path):
  teacher, tp, student, _ = _models()
  run = _run(tmp_path, _batch(8))
  run.config.student.init.select.layers = (1, 3)
  params, report = runner.init_student(run, student, teacher, tp)
  f, t = flatten(params), flatten(tp)
  np.testing.assert_array_equal(f["encoder/layer_0/attention/query/kernel"],
                                t["encoder/layer_1/attention/query/kernel"])
  np.testing.assert_array_equal(f["encoder/layer_1/output/kernel"], t["encoder/layer_3/output/kernel"])
  np.testing.assert_array_equal(f["embeddings/word_embeddings/embedding"],
                                t["embeddings/word_embeddings/embedding"])
  assert report["reused_params"] == report["student_params"] and report["teacher_layers"] == [1, 3]
  # CKA needs each layer's output: found under encoder/layer_i, not a sub-module's
  run.config.student.init.strategy = "similarity"
  run.config.student.init.similarity.mode = "drop"
  params, report = runner.init_student(run, student, teacher, tp)
  assert report["reused_params"] == report["student_params"] and len(report["teacher_layers"]) == 2


def test_the_init_is_chosen_among_every_layer_choice_by_agreement_without_labels(tmp_path):
  teacher, tp, student, _ = _models()
  run = _run(tmp_path, _batch(8))
  run.config.student.init.choose.by = "agreement"
  run.config.student.init.choose.num_examples = 8
  chosen, choice = choose.choose_init(run, student, teacher, tp, "teacher-id")
  # 2 of the teacher's 4 layers: 6 plans, each scored by mean cosine with the teacher
  assert sorted(choice["agreement"]) == ["layers_0,1", "layers_0,2", "layers_0,3", "layers_1,2",
                                         "layers_1,3", "layers_2,3"]
  best = max(choice["agreement"], key=choice["agreement"].get)
  assert choice["chosen"] == best
  assert tuple(chosen.config.student.init.select.layers) == tuple(
      int(i) for i in best[len("layers_"):].split(","))
  # the score is the mean cosine of the two models' normalised pooled outputs, recomputed here
  params, _ = runner.init_student(chosen, student, teacher, tp)
  rows = run.data.rows(slice(0, 8))
  pooled = lambda m, p: m.apply(p, rows)[0]["pooled"]
  unit = lambda v: v / np.linalg.norm(v, axis=-1, keepdims=True)
  again = np.mean(np.sum(unit(pooled(student, params)) * unit(pooled(teacher, tp)), -1))
  assert again == pytest.approx(choice["agreement"][best], rel=1e-5)
  # a rerun reads every score back instead of recomputing it
  assert choose.choose_init(run, student, teacher, tp, "teacher-id")[1] == choice


def test_the_pooled_cache_matches_the_teacher_and_is_rebuilt_when_stale(tmp_path):
  teacher, tp, _, _ = _models()
  bound = losses.bind((("embedding_mse", 1.0, {}),), "terms")
  run = _run(tmp_path, _batch(6))
  cached = runner.cached_outputs(run, bound, teacher, tp, run.config.student)["teacher_pooled"]
  tokens = run.data.train
  out = teacher.module.apply({"params": tp}, *[tokens[k] for k in teacher.family.inputs])
  np.testing.assert_allclose(cached, mean_pool(out.last_hidden_state, tokens["attention_mask"]),
                             rtol=1e-5, atol=1e-6)
  key_file = tmp_path / "teacher_cache" / "key.json"
  first_key = key_file.read_text()
  again = runner.cached_outputs(run, bound, teacher, tp, run.config.student)["teacher_pooled"]
  np.testing.assert_array_equal(again, cached)                 # read back, same key
  other = _run(tmp_path, _batch(6, seed=1))                    # other sentences: stale
  rebuilt = runner.cached_outputs(other, bound, teacher, tp, run.config.student)["teacher_pooled"]
  assert key_file.read_text() != first_key and not np.allclose(rebuilt, cached)


def test_read_sentences_takes_both_columns_of_an_sts_csv_and_dedupes(tmp_path):
  csv = tmp_path / "sts.csv"
  csv.write_text("g\tf\t2012\t1\t5.0\tA cat.\tA dog.\ng\tf\t2012\t2\t1.0\tA dog.\tA bird.\n")
  config = lambda p: ml_collections.ConfigDict({"path": str(p)})
  assert read_sentences(config(csv)) == ["A cat.", "A dog.", "A bird."]
  txt = tmp_path / "s.txt"
  txt.write_text("one\n\ntwo\none\n")
  assert read_sentences(config(txt)) == ["one", "two"]
  with pytest.raises(FileNotFoundError, match="missing.txt"):
    read_sentences(config(tmp_path / "missing.txt"))


def test_trim_cuts_padding_to_a_multiple_of_16():
  batch = {"input_ids": np.ones((2, 128), np.int32), "attention_mask": np.zeros((2, 128), np.int32),
           "token_type_ids": np.zeros((2, 128), np.int32), "teacher_pooled": np.ones((2, 384))}
  batch["attention_mask"][0, :20] = 1
  out = trim(batch)
  assert out["input_ids"].shape == (2, 32) and out["teacher_pooled"].shape == (2, 384)


def test_the_held_out_token_bound_is_a_setting(monkeypatch):
  # data.eval_max_tokens reaches the held-out batching; the score does not depend on it
  from distill_jax import sharding
  from distill_jax.tasks import TASKS
  from distill_jax.tasks import sentence_embedding as se
  from distill_jax.text.sts import StsPairs
  teacher, tp, _, _ = _models()

  class Words:   # one id per word (its length), padded to max_length
    def encode(self, sentences, max_length, padding="max_length"):
      ids = np.zeros((len(sentences), max_length), np.int32)
      for i, s in enumerate(sentences):
        words = [len(w) for w in s.split()][:max_length]
        ids[i, :len(words)] = words
      return {"input_ids": ids, "attention_mask": (ids > 0).astype(np.int32),
              "token_type_ids": np.zeros_like(ids)}

  sentences = [" ".join("x" * (1 + (i * j) % 9) for j in range(1 + i % 14)) for i in range(30)]
  pairs = StsPairs(sentences[:15], sentences[15:], np.linspace(0, 5, 15))
  data = TaskData("sts", {}, {"pairs": pairs, "tokenizer": Words()}, {}, {}, example={})
  bounds = []
  real = se.length_batches
  monkeypatch.setattr(se, "length_batches",
                      lambda lengths, rows, bound: bounds.append(bound) or real(lengths, rows, bound))
  config = defaults()
  config.data.eval_max_length, config.eval_batch_size = 16, 8
  scores = []
  for bound in (32, 10**6):
    config.data.eval_max_tokens = bound
    scores.append(TASKS.get("sentence_embedding").evaluate(teacher, tp, data, sharding.make_mesh(),
                                                           config)["spearman"])
  assert bounds == [32, 10**6]
  np.testing.assert_allclose(scores[0], scores[1], atol=1e-6)
