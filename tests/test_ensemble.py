"""Several teachers: an ensemble's combined logits by hand, a term that reads one member, the
options' errors, and a run whose teacher is two exports."""
import json

import jax
import numpy as np
import pytest

from distill_jax import losses, train
from distill_jax.config import apply_overrides, load
from distill_jax.errors import InputError
from distill_jax.main import run_job
from distill_jax.models.ensemble import Ensemble
from tests.helpers import ROOT, fixed_batch, init_params, mlp, state_for


def _members():
  models = (mlp((16,)), mlp((8, 8)))
  params = {f"member_{i}": init_params(m, (64,), jax.random.PRNGKey(i))
            for i, m in enumerate(models)}
  return models, params


def _log_softmax(z):
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_an_ensemble_combines_logits_or_probabilities_and_keeps_each_members():
  models, params = _members()
  batch = fixed_batch(6)
  own = [np.asarray(m.apply(params[f"member_{i}"], batch)[0]["logits"], np.float64)
         for i, m in enumerate(models)]
  out, _ = Ensemble(models, "logits").apply(params, batch)
  np.testing.assert_allclose(out["logits"], (own[0] + own[1]) / 2, rtol=1e-5, atol=1e-6)
  for i in range(2):
    np.testing.assert_allclose(out[f"logits@{i}"], own[i], rtol=1e-5, atol=1e-6)
  out, _ = Ensemble(models, "probs").apply(params, batch)
  mean_p = (np.exp(_log_softmax(own[0])) + np.exp(_log_softmax(own[1]))) / 2
  np.testing.assert_allclose(out["logits"], np.log(mean_p), rtol=1e-5, atol=1e-6)
  with pytest.raises(InputError, match="at least 2 members"):
    Ensemble(models[:1])
  with pytest.raises(InputError, match="teacher.combine='vote'"):
    Ensemble(models, "vote")


def test_a_term_with_teacher_i_reads_that_member_only():
  models, params = _members()
  student = mlp((8,))
  batch = fixed_batch(8)
  terms = losses.bind((("kd", 1.0, {"temperature": 2.0, "teacher": 1}),), "terms")
  step = jax.jit(train.make_train_step(student, terms, Ensemble(models)))
  state = state_for(student)
  _, metrics = step(state, batch, params)
  t = np.asarray(models[1].apply(params["member_1"], batch)[0]["logits"], np.float64) / 2
  s = np.asarray(student.apply(state.params, batch)[0]["logits"], np.float64) / 2
  p, log_p, log_q = np.exp(_log_softmax(t)), _log_softmax(t), _log_softmax(s)
  want = 4.0 * np.mean(np.sum(p * (log_p - log_q), -1))      # T^2 KL at T = 2
  assert float(metrics["kd"]) == pytest.approx(want, rel=1e-4)
  # a plain teacher has no members: the step says so when it is built
  with pytest.raises(InputError, match="reads teacher=1, but the teacher's members give nothing"):
    jax.eval_shape(train.make_train_step(student, terms, models[0]), state, batch,
                   params["member_0"])


@pytest.mark.parametrize("options,match", [
    ({"teacher": -1}, r"teacher=-1 must be an ensemble member's index"),
    ({"teacher": "a"}, r"teacher='a' must be"),
])
def test_the_teacher_option_is_checked(options, match):
  with pytest.raises(InputError, match=match):
    losses.bind((("kd", 1.0, options),), "distill.terms")
  with pytest.raises(InputError, match=r"term 'ce' has no option\(s\) \['teacher'\]"):
    losses.bind((("ce", 1.0, {"teacher": 0}),), "distill.terms")


def test_a_run_with_two_exports_as_its_teacher(smoke_run, tmp_path):
  workdir, _ = smoke_run
  export = str(workdir / "teacher" / "export")
  config = apply_overrides(load(f"{ROOT}/configs/digits_mlp10_to3.py", "smoke"), {
      "teacher.load": f"{export},{export}", "teacher.combine": "probs",
      "student.steps": 10, "baseline.enabled": False, "log_every": 5, "checkpoint_every": 10,
      "distill.terms": (("kd", 0.5, {"temperature": 4.0}), ("kd", 0.4, {"teacher": 1}),
                        ("ce", 0.1, {}))})
  summary = run_job(config, str(tmp_path / "ensemble"))
  single = json.loads((workdir / "summary.json").read_text())
  # two copies of one teacher: the ensemble's predictions are that teacher's
  assert summary["teacher"]["accuracy"] == single["teacher"]["accuracy"]
  assert summary["student"]["init"]["strategy"] == "select"      # built from member 0
  # 10 steps towards the ensemble: the student agrees with it more than at init
  assert summary["student"]["agreement"] > summary["student"]["at_init"]["agreement"] + 0.1
