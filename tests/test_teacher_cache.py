"""The teacher-output cache: keyed, never stale, and equivalent to the online teacher."""
import jax
import numpy as np
import pytest

from distill_jax import runner, teacher_cache
from tests.helpers import mlp, state_for, toy_config, toy_data


def test_cache_key_changes_with_teacher_data_and_settings():
  params = state_for(mlp((8,))).params
  data = toy_data().train
  key = lambda p=params, d=data, s=None: teacher_cache.cache_key(p, d, s or {"cache": "full"})
  base = key()
  assert base == key()
  assert base != key(p=jax.tree.map(lambda a: a + 1e-3, params))
  assert base != key(d=toy_data(seed=1).train)
  assert base != key(s={"cache": "topk"})


def test_stale_cache_is_detected_and_rebuilt(tmp_path, capsys):
  calls = []

  def build(value):
    def _build():
      calls.append(value)
      return {"teacher_logits": np.full((3, 2), value, np.float32)}
    return _build

  a = teacher_cache.load_or_build(str(tmp_path), "key-a", build(1.0))
  again = teacher_cache.load_or_build(str(tmp_path), "key-a", build(9.0))
  assert calls == [1.0] and np.all(again["teacher_logits"] == 1.0)
  b = teacher_cache.load_or_build(str(tmp_path), "key-b", build(2.0))
  assert calls == [1.0, 2.0] and np.all(b["teacher_logits"] == 2.0)
  assert "stale" in capsys.readouterr().out
  assert np.all(a["teacher_logits"] == 1.0)


def test_topk_cache_keeps_the_k_largest_logits_and_their_classes():
  logits = np.array([[0.1, 3.0, -1.0, 2.0]], np.float32)
  out = teacher_cache.compute({"logits": logits}, "topk", 2)
  np.testing.assert_array_equal(out["teacher_topk_indices"], [[1, 3]])
  np.testing.assert_allclose(out["teacher_topk_values"], [[3.0, 2.0]])
  with pytest.raises(ValueError, match="cache_topk=7 must be in"):
    teacher_cache.compute({"logits": logits}, "topk", 7)
  with pytest.raises(ValueError, match="the terms read the teacher's \\['pooled'\\]"):
    teacher_cache.compute({"pooled": logits}, "topk", 2)


def _distil(workdir, **distill):
  config = toy_config(**{"student.steps": 12, "batch_size": 16, "student.mixup": 0.0,
                         **{f"distill.{k}": v for k, v in distill.items()}})
  run = runner.start(config, str(workdir), toy_data(n_train=40))
  teacher, student = mlp((32,)), mlp((16,))
  tparams = state_for(teacher, seed=3).params
  fresh = student.init(jax.random.PRNGKey(1), run.data.example)
  return runner.train_phase(run, "student", student, fresh, config.student, config.distill.terms,
                            (teacher, tparams))


def test_training_from_the_cache_matches_the_online_teacher(tmp_path):
  results = {mode: _distil(tmp_path / (mode or "online"), cache=mode, cache_topk=10)
             for mode in ("", "full", "topk")}
  # full logits and top-10 of 10 classes are the same teacher: same parameters
  for mode in ("full", "topk"):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6),
                 results[""], results[mode])
  assert (tmp_path / "full" / "teacher_cache" / "outputs.npz").exists()


def test_the_cache_refuses_augmented_recipes(tmp_path):
  with pytest.raises(ValueError, match="mixed-up inputs need the online teacher"):
    config = toy_config(**{"distill.cache": "full", "student.mixup": 1.0})
    run = runner.start(config, str(tmp_path), toy_data())
    teacher, student = mlp((32,)), mlp((16,))
    runner.train_phase(run, "student", student, state_for(student).params, config.student,
                       config.distill.terms, (teacher, state_for(teacher).params))


def test_predict_in_another_order_returns_the_rows_in_their_own_order():
  # The cache computes token rows shortest first (inference.length_order); what comes back must be
  # each row's own output, as without an order, including the last, partial batch.
  from distill_jax import inference, sharding
  model = mlp((16,))
  params = state_for(model, seed=5).params
  rng = np.random.default_rng(0)
  arrays = {"x": rng.normal(size=(11, 64)).astype(np.float32)}
  mesh = sharding.make_mesh()
  plain = inference.predict(model, params, arrays, mesh, 4)["logits"]
  perm = rng.permutation(11)
  np.testing.assert_allclose(
      inference.predict(model, params, arrays, mesh, 4, order=perm)["logits"], plain,
      rtol=1e-6, atol=1e-6)
  # batches of changing sizes (token-bounded ones), the last running past the rows
  np.testing.assert_allclose(
      inference.predict(model, params, arrays, mesh, 4, order=perm,
                        batches=[(0, 3), (3, 5), (8, 4)])["logits"], plain, rtol=1e-6, atol=1e-6)
  with pytest.raises(ValueError, match="order must be a permutation of the 11 rows"):
    inference.predict(model, params, arrays, mesh, 4, order=np.zeros(11, int))
  mask = np.array([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 0, 0], [1, 0, 0, 0]])
  assert inference.length_order({"attention_mask": mask}).tolist() == [1, 3, 2, 0]
  assert inference.length_order(arrays) is None
