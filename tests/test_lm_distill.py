"""Distilling causal LMs: the divergences against numpy, the top-k teacher cache against the
full distribution, on-policy steps against generation, block influence on a block made an
identity, the label-free agreement and the top-k cache's key."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax import inference, losses, models, recombine, train
from distill_jax.errors import InputError
from distill_jax.models.llama import PARTITION_RULES
from distill_jax.teacher_cache import cache_key
from distill_jax.text.generate import generate

TINY = dict(name="llama", hidden_size=32, num_layers=3, num_heads=4, num_kv_heads=2,
            intermediate_size=48, vocab_size=40)


def softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def kl(p, q):
  return float(np.mean(np.sum(p * (np.log(p) - np.log(q)), -1)))


@pytest.fixture(scope="module")
def logits():
  rng = np.random.default_rng(0)
  return rng.normal(size=(2, 3, 7)), rng.normal(size=(2, 3, 7))   # (batch, tokens, vocab)


def test_reverse_kl_and_jsd_match_numpy(logits):
  t, s = logits
  p, q = softmax(t / 2.0), softmax(s / 2.0)
  student, teacher = {"logits": jnp.asarray(s)}, {"logits": jnp.asarray(t)}
  assert float(losses.reverse_kl(student, teacher, {}, temperature=2.0)) == pytest.approx(
      4.0 * kl(q, p), rel=1e-5)
  beta = 0.3
  m = beta * p + (1 - beta) * q
  want = 4.0 * (beta * kl(p, m) + (1 - beta) * kl(q, m))
  assert float(losses.jsd(student, teacher, {}, beta=beta, temperature=2.0)) == pytest.approx(
      want, rel=1e-5)
  assert float(losses.jsd(teacher, teacher, {}, beta=0.5)) == pytest.approx(0.0, abs=1e-6)
  with pytest.raises(InputError, match="beta=1.0 must be in"):
    losses.jsd(student, teacher, {}, beta=1.0)


def test_top_k_kl_is_the_renormalised_teacher_and_exact_with_the_whole_vocabulary(logits):
  t, s = logits
  full = losses.kd({"logits": jnp.asarray(s)}, {"logits": jnp.asarray(t)}, {})
  top = inference.top_k(jnp.asarray(t), 7)
  assert float(losses.kd({"logits": jnp.asarray(s)}, top, {})) == pytest.approx(float(full),
                                                                                rel=1e-5)
  top3 = inference.top_k(jnp.asarray(t), 3)
  idx = np.argsort(-t, -1)[..., :3]
  np.testing.assert_array_equal(top3["topk_indices"], idx)
  p = softmax(np.take_along_axis(t, idx, -1))                 # renormalised over the top 3
  log_q = np.log(np.take_along_axis(softmax(s), idx, -1))
  want = np.mean(np.sum(p * (np.log(p) - log_q), -1))
  assert float(losses.kd({"logits": jnp.asarray(s)}, top3, {})) == pytest.approx(want, rel=1e-5)
  with pytest.raises(InputError, match="top-k cache"):
    losses.reverse_kl({"logits": jnp.asarray(s)}, top3, {})


def test_a_cached_top_k_per_token_replaces_the_teacher_pass(logits):
  """Batch keys teacher_topk_* (what distill.cache='topk' adds) are the teacher's outputs
  the terms read, with no teacher params at all; per token they stay sparse."""
  t, s = logits
  cached = {f"teacher_{k}": v for k, v in inference.top_k(jnp.asarray(t), 4).items()}
  out, feats = train.teacher_outputs(None, None, {"tokens": 0, **cached}, False, 7, None)
  assert set(out) == {"topk_values", "topk_indices"} and not feats
  want = losses.topk_kl_divergence(cached["teacher_topk_values"],
                                   cached["teacher_topk_indices"], jnp.asarray(s))
  got = losses.kd({"logits": jnp.asarray(s)}, out, {})
  assert float(got) == pytest.approx(float(want), rel=1e-6)
  # one distribution per example (classification) still becomes dense logits
  flat = {f"teacher_{k}": v[:, 0] for k, v in inference.top_k(jnp.asarray(t), 4).items()}
  out, _ = train.teacher_outputs(None, None, flat, False, 7, None)
  assert out["logits"].shape == (2, 7)


def test_resampled_steps_are_spread_evenly():
  on = lambda f, n: [bool(train.is_resampled(jnp.asarray(s), f)) for s in range(n)]
  assert on(0.5, 6) == [False, True] * 3
  assert on(0.25, 8) == [False, False, False, True] * 2
  assert sum(on(0.3, 100)) == 30 and all(on(1.0, 5)) and not any(on(0.0, 5))


def test_an_on_policy_step_trains_on_the_students_own_greedy_continuation():
  from distill_jax.config import defaults
  from distill_jax.tasks import TASKS
  model = models.build(TINY, {})
  params = model.init(jax.random.PRNGKey(0), {"tokens": jnp.zeros((1, 4), jnp.int32)})
  config = defaults()
  config.data.max_length = 8
  config.distill.on_policy.update(dict(fraction=1.0, prompt_length=3, temperature=0.0))
  resample = TASKS.get("causal_lm").sampler(model, config)
  seq = np.random.default_rng(2).integers(3, 40, (2, 9)).astype(np.int32)
  batch = {"tokens": seq[:, :-1], "y": seq[:, 1:]}
  got = jax.jit(resample)(params, batch, jax.random.PRNGKey(0))
  new = generate(model, params, [list(r[:3]) for r in seq], 6, pad_to=1)
  full = np.concatenate([seq[:, :3], np.asarray(new)], 1)
  np.testing.assert_array_equal(got["tokens"], full[:, :-1])
  np.testing.assert_array_equal(got["y"], full[:, 1:])
  # the step's loss is the loss on that batch
  terms = losses.bind((("kd", 1.0, {}),), "terms")
  teacher_params = jax.tree.map(lambda a: a * 1.1, params)
  state = train.TrainState.create(params, train.make_optimizer(1e-3, 10), jax.random.PRNGKey(0))
  on = train.make_train_step(model, terms, model, resample=resample, resample_fraction=1.0)
  off = train.make_train_step(model, terms, model)
  _, m_on = on(state, batch, teacher_params)
  _, m_off = off(state, dict(got), teacher_params)
  assert float(m_on["resampled"]) == 1.0
  assert float(m_on["loss"]) == pytest.approx(float(m_off["loss"]), rel=1e-5)


def test_influence_drops_a_block_that_leaves_its_input_unchanged():
  model = models.build(TINY, {})
  params = model.init(jax.random.PRNGKey(0), {"tokens": jnp.zeros((1, 4), jnp.int32)})
  # Block 1 writes nothing to the residual stream: its output equals its input.
  params = jax.tree_util.tree_map_with_path(
      lambda path, a: jnp.zeros_like(a) if "layer_1" in jax.tree_util.keystr(path) and (
          "output" in jax.tree_util.keystr(path) or "down" in jax.tree_util.keystr(path)) else a,
      params)
  student = models.build(dict(TINY, num_layers=2), {})
  fresh = student.init(jax.random.PRNGKey(1), {"tokens": jnp.zeros((1, 4), jnp.int32)})
  batch = {"tokens": np.random.default_rng(0).integers(0, 40, (2, 12)).astype(np.int32)}
  context = recombine.Context(model, params, batch)
  for measure in ("cosine", "cka"):
    _, report = recombine.recombine(params, fresh, strategy="influence", rules=PARTITION_RULES,
                                    context=context, measure=measure)
    assert report["influence"][1] == pytest.approx(0.0, abs=1e-6)
    assert report["teacher_layers"] == [0, 2]
  _, report = recombine.recombine(params, fresh, strategy="influence", rules=PARTITION_RULES,
                                  context=context, keep=(1,))
  assert 1 in report["teacher_layers"]


def test_lm_agreement_is_the_share_of_equal_greedy_next_tokens():
  from distill_jax.tasks import TASKS
  task = TASKS.get("causal_lm")
  assert task.agreement_output == "next_token"
  assert task.agreement(np.array([[1, 2, 3, 4]]), np.array([[1, 0, 3, 0]])) == 0.5


def test_the_top_k_cache_key_names_teacher_tokenizer_and_data():
  params, data = {"w": np.ones(3)}, {"seq": np.arange(6).reshape(2, 3)}
  settings = lambda tok: {"cache": "topk", "topk": 8, "data": {"tokenizer": tok}}
  base = cache_key(params, data, settings("a"))
  assert base == cache_key(params, data, settings("a"))
  assert base != cache_key(params, data, settings("b"))                       # tokenizer
  assert base != cache_key({"w": np.ones(3) * 2}, data, settings("a"))          # teacher
  assert base != cache_key(params, {"seq": np.arange(6).reshape(3, 2)}, settings("a"))  # data


def test_remembered_evaluations_are_keyed_by_parameters_and_reference():
  import types
  from distill_jax.config import defaults
  from distill_jax.evaluation_cache import memoized
  calls = []
  run = types.SimpleNamespace(config=defaults(), data=types.SimpleNamespace(identity={"a": 1}))
  model = types.SimpleNamespace(config={"name": "toy"})
  evaluate = lambda params: calls.append(1) or {"score": float(np.sum(params["w"]))}
  first = memoized(evaluate, run, model, {"params": {"t": np.ones(2)}})
  assert first({"w": np.ones(3)}) == {"score": 3.0} and len(calls) == 1
  assert first({"w": np.ones(3)}) == {"score": 3.0} and len(calls) == 1      # remembered
  assert first({"w": np.ones(3) * 2}) == {"score": 6.0} and len(calls) == 2  # other params
  other_teacher = memoized(evaluate, run, model, {"params": {"t": np.zeros(2)}})
  assert other_teacher({"w": np.ones(3)}) == {"score": 3.0} and len(calls) == 3
