"""Compact BERT students: the factorised token table (truncated SVD, weighted by calibration
tokens), heads pruned at full hidden width (``head_dim``), export and reload of both, the
choice of a student shape under a parameter budget, and length-bounded inference batches."""
import jax
import ml_collections
import numpy as np
import pytest

from distill_jax import choose, models, recombine, runner, sharding
from distill_jax.errors import InputError
from distill_jax.models.bert import BertConfig
from distill_jax.paths import count_params, flatten, unflatten
from distill_jax.recombine.factorize import relative_error, truncated_svd, weighted_split
from distill_jax.tasks.sentence_embedding import length_batches, predict_by_length
from distill_jax.text.weights import export_safetensors, load_safetensors
from tests.test_sentence_embedding import RULES, TEACHER, _batch, _run

RNG = np.random.default_rng(0)


def _hidden(model, params, batch):
  out = model.module.apply({"params": params}, *[batch[k] for k in model.family.inputs])
  return np.asarray(out.last_hidden_state)


def test_truncated_svd_error_is_the_discarded_spectrum_and_full_rank_is_exact():
  table = RNG.normal(size=(40, 12))
  eig = np.sort(np.linalg.eigvalsh(table.T @ table))[::-1]    # singular values squared
  narrow, projection, error = truncated_svd(table, 5)
  assert narrow.shape == (40, 5) and projection.shape == (5, 12)
  assert error == pytest.approx(np.sqrt(eig[5:].sum() / eig.sum()), rel=1e-6)
  assert relative_error(table, narrow, projection) == pytest.approx(error, rel=1e-5)
  narrow, projection, error = truncated_svd(table, 12)
  np.testing.assert_allclose(narrow @ projection, table, atol=1e-5)
  assert error == pytest.approx(0.0, abs=1e-7)
  with pytest.raises(InputError, match="rank 13 must be in 1..12"):
    truncated_svd(table, 13)


def test_token_weighting_fits_the_rows_the_data_uses():
  # rows 0-3 lie in a 2-d subspace; the other rows are large and random: the plain SVD spends
  # its rank on them, the weighted split (rows 0-3 counted often) reproduces rows 0-3.
  basis = RNG.normal(size=(2, 10))
  table = np.concatenate([RNG.normal(size=(4, 2)) @ basis, 5 * RNG.normal(size=(30, 10))])
  counts = np.zeros(34)
  counts[:4] = 1e6
  narrow, projection = weighted_split(table, 2, counts)
  np.testing.assert_allclose(narrow[:4] @ projection, table[:4], atol=1e-3)
  plain, plain_projection, _ = truncated_svd(table, 2)
  assert np.abs(plain[:4] @ plain_projection - table[:4]).max() > 0.1
  assert relative_error(table, narrow, projection, counts) < 1e-3


def test_a_factorised_table_is_the_product_of_its_two_arrays():
  teacher = models.build(TEACHER, {})
  student = models.build(dict(TEACHER, embedding_rank=4), {})
  batch = _batch()
  sp = student.init(jax.random.PRNGKey(1), batch)
  table, proj = sp["embeddings"]["word_embeddings"]["embedding"], sp["embeddings"][
      "word_projection"]["kernel"]
  assert table.shape == (50, 4) and proj.shape == (4, 16)
  full = flatten(sp)
  del full["embeddings/word_projection/kernel"]
  full["embeddings/word_embeddings/embedding"] = np.asarray(table) @ np.asarray(proj)
  np.testing.assert_allclose(_hidden(student, sp, batch),
                             _hidden(teacher, unflatten(full), batch), atol=1e-5)
  with pytest.raises(InputError, match="embedding_rank 17 must be 0"):
    BertConfig(hidden_size=16, num_heads=2, embedding_rank=17)


def _recombine(fields, strategy="select", **options):
  teacher = models.build(TEACHER, {})
  tp = teacher.init(jax.random.PRNGKey(0), _batch())
  student = models.build(dict(TEACHER, **fields), {})
  sp = student.init(jax.random.PRNGKey(1), _batch())
  context = recombine.Context(teacher, tp, _batch(16), None, student)
  params, report = recombine.recombine(tp, sp, strategy=strategy, rules=RULES, context=context,
                                       **options)
  return teacher, tp, student, params, report


def test_any_strategy_fills_a_factorised_student_and_full_rank_is_the_teacher():
  teacher, tp, student, params, report = _recombine({"embedding_rank": 16})
  np.testing.assert_allclose(_hidden(student, params, _batch()), _hidden(teacher, tp, _batch()),
                             atol=1e-4)
  info = report["factorized"]["embeddings:embeddings/word_embeddings/embedding"]
  assert info["rank"] == 16 and info["weighted_by_tokens"] and info["relative_error"] < 1e-5
  assert report["reused_params"] == report["student_params"]
  _, _, _, params, report = _recombine({"embedding_rank": 3, "num_layers": 2}, "prune",
                                       layers=(0, 3))
  assert report["factorized"]["embeddings:embeddings/word_embeddings/embedding"][
      "relative_error"] > 0.1
  assert params["embeddings"]["word_projection"]["kernel"].shape == (3, 16)
  # a student initialised fresh keeps its own fresh pair
  _, _, _, params, report = _recombine({"embedding_rank": 3}, "random")
  assert "factorized" not in report and report["reused_params"] == 0


def test_heads_pruned_at_full_width_equal_the_teacher_with_those_heads_silenced():
  teacher = models.build(TEACHER, {})
  tp = flatten(teacher.init(jax.random.PRNGKey(0), _batch()))
  # head 1 of every layer gets 3x larger query weights: "weight" importance keeps it
  for i in range(4):
    tp[f"encoder/layer_{i}/attention/query/kernel"] = (
        tp[f"encoder/layer_{i}/attention/query/kernel"] * np.repeat([1.0, 3.0], 8))
  student = models.build(dict(TEACHER, num_heads=1, head_dim=8), {})
  sp = student.init(jax.random.PRNGKey(1), _batch())
  params, report = recombine.recombine(unflatten(tp), sp, strategy="prune", rules=RULES,
                                       context=recombine.Context(teacher, student=student),
                                       importance="weight")
  assert report["kept"]["num_heads"] == {f"layer_{i}": 1 for i in range(4)}
  silenced = dict(tp)      # head 0's rows of the output projection zeroed: it adds nothing
  for i in range(4):
    out = np.array(tp[f"encoder/layer_{i}/attention/output/kernel"])
    out[:8] = 0.0
    silenced[f"encoder/layer_{i}/attention/output/kernel"] = out
  np.testing.assert_allclose(_hidden(student, params, _batch()),
                             _hidden(teacher, unflatten(silenced), _batch()), atol=1e-5)


def test_a_compact_student_exports_and_reloads_with_its_rank_and_head_dim(tmp_path):
  cfg = BertConfig(**{k: v for k, v in TEACHER.items() if k != "name"}).replace(
      num_heads=1, head_dim=8, embedding_rank=4)
  student = models.build(dict(cfg.to_dict(), name="bert"), {})
  params = student.init(jax.random.PRNGKey(1), _batch())
  export_safetensors(params, str(tmp_path), cfg)
  loaded, loaded_cfg = load_safetensors(str(tmp_path))
  assert loaded_cfg.embedding_rank == 4 and loaded_cfg.head_dim == 8
  for path, value in flatten(params).items():
    np.testing.assert_array_equal(flatten(loaded)[path], value)


def _plan(name, **fields):
  return {"name": name, **{f"student.model.{k}": v for k, v in fields.items()}}


def test_plans_over_the_parameter_budget_are_skipped_and_named(tmp_path):
  teacher = models.build(TEACHER, {})
  tp = teacher.init(jax.random.PRNGKey(0), _batch())
  run = _run(tmp_path, _batch(8))
  c = run.config.student
  with c.unlocked():
    c.model = ml_collections.ConfigDict(dict(TEACHER, num_layers=2, embedding_rank=0))
  c.init.choose.by, c.init.choose.num_examples = "agreement", 8
  c.init.choose.plans = (_plan("full", num_layers=2), _plan("rank4", num_layers=2,
                                                           embedding_rank=4),
                         _plan("rank2", num_layers=1, embedding_rank=2))
  size = lambda **f: count_params(models.build(dict(TEACHER, **f), {}).init(
      jax.random.PRNGKey(0), _batch()))
  full, rank4 = size(num_layers=2), size(num_layers=2, embedding_rank=4)
  assert rank4 < full
  c.init.choose.budget = float(rank4)              # an absolute count
  student = runner.student_model(run.config, run.data, teacher)
  chosen, choice = choose.choose_init(run, student, teacher, tp, "teacher-id")
  assert choice["over_budget"] == {"full": full}
  assert choice["params"]["rank4"] == rank4 and set(choice["agreement"]) == {"rank4", "rank2"}
  assert chosen.config.student.model.embedding_rank in (4, 2)
  c.init.choose.budget = 0.1                       # a fraction of the teacher's
  with pytest.raises(InputError, match=r"budget=0.1 \(.* params\): every plan is over it "
                                       rf"\(full {full:,}, rank4 {rank4:,}"):
    choose.choose_init(run, student, teacher, tp, "teacher-id")


def test_long_rows_go_in_smaller_batches_and_the_outputs_keep_their_order():
  lengths = [256, 200, 130, 100] + [40] * 20 + [10] * 70
  # 256 -> 4 rows (4 x 256 = 1024); 40 pads to 48: 1024 // 48 = 21 -> 16 rows; 10 pads to
  # 16: 64 x 16 = 1024 fits a full batch of 64
  assert length_batches(lengths, 64, 1024) == [(0, 4), (4, 16), (20, 16), (36, 64)]
  assert length_batches([300], 64, 256) == [(0, 1)]        # one row longer than the bound
  teacher = models.build(TEACHER, {})
  params = teacher.init(jax.random.PRNGKey(0), _batch())
  tokens = _batch(24, length=16, seed=3)
  mesh = sharding.make_mesh()
  whole = predict_by_length(teacher, params, tokens, mesh, 64, "pooled", max_tokens=10**6)
  small = predict_by_length(teacher, params, tokens, mesh, 64, "pooled", max_tokens=64)
  np.testing.assert_allclose(small, whole, atol=1e-5)
  row = teacher.apply(params, {k: v[5:6] for k, v in tokens.items()})[0]["pooled"]
  np.testing.assert_allclose(whole[5], np.asarray(row)[0], atol=1e-5)
