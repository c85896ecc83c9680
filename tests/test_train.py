"""The one train step: it learns, its loss is the weighted sum of its terms, mixup mixes what it
should, and data parallelism, accumulation, caches and precision do not change its numbers."""
import jax
import numpy as np
import pytest

from distill_jax import losses, sharding, train
from tests.helpers import fixed_batch, mlp, run_python, state_for

HINTON = (("kd", 0.7, {"temperature": 4.0}), ("ce", 0.3, {}))


def _step(student, teacher=None, terms=HINTON, **kw):
  return jax.jit(train.make_train_step(student, losses.bind(terms, "terms"), teacher, **kw))


def test_kd_train_step_lowers_loss_on_a_fixed_batch():
  teacher, student = mlp((32, 32, 32)), mlp((16,))
  teacher_params = state_for(teacher, seed=5).params
  state, batch = state_for(student), fixed_batch()
  step = _step(student, teacher)
  seen = []
  for _ in range(30):
    state, metrics = step(state, batch, teacher_params)
    seen.append(float(metrics["loss"]))
  assert seen[-1] < 0.5 * seen[0], seen
  assert int(state.step) == 30


def test_the_loss_is_the_weighted_sum_of_the_terms_computed_apart():
  teacher, student = mlp((32,)), mlp((16,))
  tparams, state, batch = state_for(teacher, seed=5).params, state_for(student), fixed_batch()
  _, metrics = _step(student, teacher)(state, batch, tparams)
  s = student.apply(state.params, batch)[0]["logits"]
  t = teacher.apply(tparams, batch)[0]["logits"]
  kd = 16.0 * losses.kl_divergence(t, s, 4.0)
  ce = losses.cross_entropy(s, batch["y"])
  assert float(metrics["kd"]) == pytest.approx(float(kd), rel=1e-5)
  assert float(metrics["ce"]) == pytest.approx(float(ce), rel=1e-5)
  assert float(metrics["loss"]) == pytest.approx(float(0.7 * kd + 0.3 * ce), rel=1e-5)


def test_teacher_is_not_updated_and_only_student_changes():
  teacher, student = mlp((32,)), mlp((16,))
  teacher_params = state_for(teacher, seed=5).params
  before = jax.tree.map(np.array, teacher_params)
  state = state_for(student)
  student_before = jax.tree.map(np.array, state.params)
  new_state, _ = _step(student, teacher)(state, fixed_batch(), teacher_params)
  jax.tree.map(np.testing.assert_array_equal, before, jax.tree.map(np.array, teacher_params))
  changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), student_before,
                         jax.tree.map(np.array, new_state.params))
  assert all(jax.tree_util.tree_leaves(changed))


def test_mixup_mixes_the_inputs_it_is_given_and_leaves_the_rest():
  x = np.arange(12, dtype=np.float32).reshape(4, 3)
  batch = {"x": x, "y": np.arange(4), "ids": np.arange(4)}
  mixed = train.mixup(batch, ("x",), jax.random.PRNGKey(0), 1.0)
  lam = float(mixed["mixup_lambda"])
  assert 0.0 < lam < 1.0
  # row i is lam * row i + (1 - lam) * row i-1 (row 0 mixes with the last)
  np.testing.assert_allclose(mixed["x"][2], lam * x[2] + (1 - lam) * x[1], rtol=1e-6)
  np.testing.assert_allclose(mixed["x"][0], lam * x[0] + (1 - lam) * x[3], rtol=1e-6)
  np.testing.assert_array_equal(mixed["y"], batch["y"])
  # Beta(alpha, alpha) is symmetric: over many keys lambda averages 1/2
  lams = [float(train.mixup(batch, ("x",), jax.random.PRNGKey(i), 0.5)["mixup_lambda"])
          for i in range(200)]
  assert abs(np.mean(lams) - 0.5) < 0.06 and min(lams) < 0.1 and max(lams) > 0.9


MULTI_DEVICE_CHECK = """
import jax, numpy as np
from distill_jax import losses, models, sharding, train
from tests.helpers import fixed_batch, mlp, state_for
assert jax.device_count() == 8, jax.devices()


def mlp_family():
  teacher, student = mlp((32, 32)), mlp((16,))
  rules = ((r".*Dense_0/kernel", (None, "fsdp")), (r".*kernel", ("fsdp", None)), (".*", ()))
  return teacher, student, state_for(teacher, seed=3).params, lambda: state_for(student), rules, (
      lambda i: fixed_batch(seed=i)), ("Dense_0", "kernel"), (None, "fsdp")


def llama_family():   # the causal LM: (B, L, vocab) logits, KV heads, tied embeddings
  lm = lambda layers: models.build(dict(name="llama", num_layers=layers, hidden_size=32,
                                        num_heads=4, num_kv_heads=2, intermediate_size=64,
                                        vocab_size=64), {})
  teacher, student = lm(2), lm(1)
  seqs = lambda i: np.random.default_rng(i).integers(0, 64, (16, 9)).astype(np.int32)
  batch = lambda i: {"tokens": seqs(i)[:, :-1], "y": seqs(i)[:, 1:]}
  init = lambda m, s: m.init(jax.random.PRNGKey(s), batch(0))
  state = lambda: train.TrainState.create(init(student, 0), train.make_optimizer(1e-2, 100),
                                          jax.random.PRNGKey(1))
  rules = ((r".*embedding", ("fsdp", None)), (r".*kernel", ("fsdp", None)), (".*", ()))
  return teacher, student, init(teacher, 3), state, rules, batch, ("embed", "embedding"), (
      "fsdp", None)


terms = losses.bind((("kd", 0.5, {"temperature": 2.0}), ("ce", 0.5, {})), "terms")
for family in (mlp_family, llama_family):
  teacher, student, tparams, make_state, FSDP, make_batch, KERNEL, SPEC = family()
  step = train.make_train_step(student, terms, teacher)
  setups = [({"data": 1}, jax.devices()[:1], sharding.REPLICATED),
            ({"data": -1}, None, sharding.REPLICATED),
            ({"data": 2, "fsdp": 4}, None, FSDP)]
  results = []
  for axes, devices, rules in setups:
    mesh = sharding.make_mesh(axes, devices)
    state = make_state()
    state_sh = sharding.tree_shardings(state, rules, mesh)
    teacher_sh = sharding.tree_shardings(tparams, rules, mesh)
    state = sharding.place(state, state_sh, copy=True)
    tp = sharding.place(tparams, teacher_sh)
    jstep = train.jit_train_step(step, mesh, state_sh, teacher_sh)
    seen = []
    for i in range(4):
      batch = sharding.shard_batch(make_batch(i), mesh)
      state, metrics = jstep(state, batch, tp)
      seen.append(float(metrics["loss"]))   # waits every step: see docs/pitfalls.md
    kernel = state.params[KERNEL[0]][KERNEL[1]]
    mu = state.opt_state[0].mu[0][KERNEL[0]][KERNEL[1]]
    shards = len(next(iter(batch.values())).addressable_shards)
    results.append((seen, jax.tree.map(np.asarray, state.params), shards, kernel.sharding.spec,
                    mu.sharding.spec))
  (l1, p1, s1, _, _), (l8, p8, s8, _, _), (lf, pf, sf, kspec, muspec) = results
  assert (s1, s8, sf) == (1, 8, 8), (s1, s8, sf)
  assert tuple(kspec) == SPEC and tuple(muspec) == SPEC, (kspec, muspec)
  for seen, params in ((l8, p8), (lf, pf)):
    np.testing.assert_allclose(l1, seen, rtol=1e-5)
    # atol 1e-5 = 1/1000 of one Adam step (lr 1e-2): the sums' order differs across devices,
    # and Adam's m / sqrt(v) magnifies that on near-zero gradients.
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), p1, params)
  print("OK", family.__name__, l1)
"""


def test_one_device_eight_devices_and_fsdp_sharding_give_the_same_steps():
  """For an MLP and a causal LM (Llama): 1 device, 8-way data parallel, and a 2 (data) x 4
  (fsdp) mesh with kernels and their Adam moments split over fsdp: same losses and params."""
  out = run_python(MULTI_DEVICE_CHECK, {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"})
  assert out.returncode == 0, out.stderr[-3000:]
  assert "OK mlp_family" in out.stdout and "OK llama_family" in out.stdout


def test_gradient_accumulation_equals_the_full_batch_step():
  teacher, student = mlp((32,)), mlp((16,))
  tparams = state_for(teacher, seed=5).params
  batch = fixed_batch(n=32)
  results = []
  for k in (1, 4):
    state, metrics = _step(student, teacher, micro_batches=k)(state_for(student), batch, tparams)
    results.append((float(metrics["loss"]), state.params))
  assert results[0][0] == pytest.approx(results[1][0], rel=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               results[0][1], results[1][1])


def test_cached_full_logits_give_the_same_step_as_the_online_teacher():
  teacher, student = mlp((32,)), mlp((16,))
  tparams = state_for(teacher, seed=5).params
  batch = fixed_batch()
  logits = teacher.apply(tparams, batch)[0]["logits"]
  _, m_online = _step(student, teacher)(state_for(student), batch, tparams)
  _, m_cached = _step(student, teacher)(state_for(student), dict(batch, teacher_logits=logits),
                                        None)
  assert float(m_online["loss"]) == pytest.approx(float(m_cached["loss"]), rel=1e-6)


def test_topk_cache_renormalises_the_teacher_over_its_top_classes():
  values = np.array([[3.0, 1.0]], np.float32)
  dense = train.dense_from_topk(values, np.array([[4, 0]]), num_classes=5)
  p = np.asarray(jax.nn.softmax(dense))
  np.testing.assert_allclose(p[0], [np.exp(1) / (np.exp(3) + np.exp(1)), 0, 0, 0,
                                    np.exp(3) / (np.exp(3) + np.exp(1))], rtol=1e-6)


def test_bfloat16_teacher_keeps_float32_student_and_close_loss():
  teacher, student = mlp((32,)), mlp((16,))
  tparams = state_for(teacher, seed=5).params
  bf16 = jax.tree.map(lambda a: a.astype("bfloat16"), tparams)
  batch = fixed_batch()
  s32, m32 = _step(student, teacher)(state_for(student), batch, tparams)
  sbf, mbf = _step(student, teacher, teacher_dtype="bfloat16")(state_for(student), batch, bf16)
  assert sbf.params["Dense_0"]["kernel"].dtype == np.float32
  assert float(mbf["loss"]) == pytest.approx(float(m32["loss"]), rel=2e-2)


def test_batch_not_divisible_by_devices_is_a_clear_error():
  with pytest.raises(ValueError, match=r"batch\['x'\] has 5 examples on this process, not "
                                       r"divisible by its 2 devices"):
    sharding.shard_batch({"x": np.zeros((5, 2))}, type("M", (), {
        "shape": {"data": 2}, "axis_names": ("data",)})())


def test_frozen_parameters_keep_their_values_and_stay_out_of_the_gradient_norm():
  from distill_jax import paths
  student = mlp((16, 16))
  state, batch = state_for(student), fixed_batch()
  frozen = (r"Dense_0/.*",)
  state = train.TrainState.create(state.params, train.make_optimizer(1e-2, 10, frozen),
                                  jax.random.PRNGKey(0))
  new, metrics = _step(student, terms=(("ce", 1.0, {}),), frozen=frozen)(state, batch)
  before, after = paths.flatten(state.params), paths.flatten(new.params)
  grads = paths.flatten(jax.grad(lambda p: losses.cross_entropy(
      student.apply(p, batch)[0]["logits"], batch["y"]))(state.params))
  trained = [k for k in before if not k.startswith("Dense_0/")]
  for k in before:
    assert np.array_equal(after[k], before[k]) == k.startswith("Dense_0/"), k
  want = np.sqrt(sum(float(np.sum(np.square(grads[k]))) for k in trained))
  assert float(metrics["grad_norm"]) == pytest.approx(want, rel=1e-5)
