"""The teacher-output cache: keyed, never stale, and equivalent to the online teacher."""
import importlib.util

import jax
import numpy as np
import pytest

from distill_jax import pipeline, sharding, teacher_cache, train
from distill_jax.data.dataset import Dataset
from tests.helpers import ROOT, mlp, state_for


def _dataset(seed=0):
  rng = np.random.default_rng(seed)
  return Dataset("toy", rng.normal(size=(40, 64)).astype(np.float32),
                 rng.integers(0, 10, 40).astype(np.int32),
                 rng.normal(size=(8, 64)).astype(np.float32), np.arange(8, dtype=np.int32), 10)


def test_cache_key_changes_with_teacher_data_and_preprocessing():
  params = state_for(mlp((8,))).params
  key = lambda p=params, d=_dataset(), pre=None, mode="logits", k=5: teacher_cache.cache_key(
      p, d, pre or {"scale": 1}, mode, k)
  base = key()
  assert base == key()
  assert base != key(p=jax.tree.map(lambda a: a + 1e-3, params))
  assert base != key(d=_dataset(seed=1))
  assert base != key(pre={"scale": 2})
  assert base != key(mode="topk")


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
  out = teacher_cache.compute(lambda x: logits, np.zeros((1, 1)), "topk", 2)
  np.testing.assert_array_equal(out["teacher_topk_indices"], [[1, 3]])
  np.testing.assert_allclose(out["teacher_topk_values"], [[3.0, 2.0]])
  with pytest.raises(ValueError, match="cache_topk=7 must be in"):
    teacher_cache.compute(lambda x: logits, np.zeros((1, 1)), "topk", 7)


def _config(**distill):
  spec = importlib.util.spec_from_file_location("cfg", f"{ROOT}/configs/digits_mlp10_to3.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config("smoke")
  c.student.mixup, c.student.steps, c.log_every, c.batch_size = 0.0, 12, 4, 16
  c.student.model.dropout = 0.0
  c.distill.update(distill)
  return c


def test_training_from_the_cache_matches_the_online_teacher(tmp_path):
  ds = _dataset()
  teacher, student = mlp((32,)), mlp((16,))
  tparams = state_for(teacher, seed=3).params
  mesh = sharding.make_mesh()
  results = {}
  for mode in ("", "logits", "topk"):
    config = _config(cache=mode, cache_topk=10)
    fresh = train.init_params(student, (64,), jax.random.PRNGKey(1))
    results[mode] = pipeline.train_model("student", student, fresh, config.student, config, ds,
                                         mesh, str(tmp_path / (mode or "online")),
                                         teacher=(teacher, tparams))
  # full logits and top-10 of 10 classes are the same teacher: same parameters
  for mode in ("logits", "topk"):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6),
                 results[""], results[mode])
  assert (tmp_path / "logits" / "teacher_cache" / "outputs.npz").exists()


def test_the_cache_refuses_augmented_recipes(tmp_path):
  config = _config(cache="logits")
  config.student.mixup = 1.0
  with pytest.raises(ValueError, match="mixed-up inputs need the online teacher"):
    pipeline.train_model("student", mlp((16,)), state_for(mlp((16,))).params, config.student,
                         config, _dataset(), sharding.make_mesh(), str(tmp_path),
                         teacher=(mlp((32,)), state_for(mlp((32,))).params))
