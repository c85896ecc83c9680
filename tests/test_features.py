"""Feature-level KD: each term against a hand-computed value, feature capture, projections,
a term registered from outside the package, and a stage-wise run that exports no projection."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax import features, losses, train
from distill_jax.paths import flatten
from tests.helpers import build, init_params, mlp


def _loss(name, teacher, student):
  return float(losses.TERMS.get(name).fn(jnp.array(teacher, jnp.float32),
                                         jnp.array(student, jnp.float32)))


def test_hint_is_mean_squared_error():
  assert _loss("hint", [[1.0, 2.0]], [[0.0, 0.0]]) == pytest.approx((1 + 4) / 2)


def test_attention_transfer_of_vectors_and_of_channel_maps():
  # (B, D): map = f^2 / ||f^2||: [1, 0] and [0, 1]; squared distance 2.
  assert _loss("attention", [[1.0, 0.0]], [[0.0, 2.0]]) == pytest.approx(2.0)
  # (B, positions, channels): channel means of f^2 are [1, 0] and [12.5, 12.5] -> unit
  # [1, 0] and [1, 1]/sqrt(2): (1 - 1/sqrt2)^2 + 1/2 = 2 - sqrt(2).
  t = [[[1.0, 1.0], [0.0, 0.0]]]
  s = [[[3.0, 4.0], [3.0, 4.0]]]
  assert _loss("attention", t, s) == pytest.approx(2.0 - math.sqrt(2.0), rel=1e-6)


def test_cosine_is_one_minus_cosine_similarity():
  assert _loss("cosine", [[1.0, 0.0]], [[1.0, 1.0]]) == pytest.approx(1 - 1 / math.sqrt(2))


def test_rkd_distance_normalises_by_mean_distance_and_uses_huber():
  # teacher points 0, 1, 3: distances (1, 3, 2), mean 2 -> (0.5, 1.5, 1.0)
  # student points 0, 2, 4: distances (2, 4, 2), mean 8/3 -> (0.75, 1.5, 0.75)
  # Huber(0.25) = 0.5 * 0.25^2 = 0.03125 for two of three pairs, both orders, over B(B-1) = 6.
  got = _loss("rkd", [[0.0], [1.0], [3.0]], [[0.0], [2.0], [4.0]])
  assert got == pytest.approx(4 * 0.03125 / 6, rel=1e-5)


def test_rkd_ignores_a_global_scale():
  t = np.random.default_rng(0).normal(size=(5, 3))
  assert _loss("rkd", t, 7.0 * t) == pytest.approx(0.0, abs=1e-9)


def test_similarity_preserving_compares_normalised_gram_matrices():
  # G_t = I; student rows equal so G_s rows are [1, 1]/sqrt(2):
  # ||I - G_s||^2 = 2 (1 - 1/sqrt2)^2 + 2 * 1/2 = 4 - 2 sqrt2, divided by B^2 = 4.
  got = _loss("similarity", [[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [1.0, 0.0]])
  assert got == pytest.approx(1 - math.sqrt(2) / 2, rel=1e-6)


def test_decoupled_kd_matches_hand_value():
  # 3 classes, label 0, T = 1. Teacher uniform: b_t = (1/3, 2/3), non-target (1/2, 1/2).
  # Student logits (0, log 3, 0): q = (1/5, 3/5, 1/5), b_s = (1/5, 4/5), non-target (3/4, 1/4).
  tckd = 1 / 3 * math.log((1 / 3) / (1 / 5)) + 2 / 3 * math.log((2 / 3) / (4 / 5))
  nckd = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
  t, y = jnp.zeros((1, 3)), jnp.array([0])
  s = jnp.array([[0.0, math.log(3.0), 0.0]])
  got = losses.decoupled_kd(s, t, y, temperature=1.0, alpha=1.0, beta=8.0)
  assert float(got) == pytest.approx(tckd + 8.0 * nckd, rel=1e-5)
  # the same distributions at T = 2 (logits doubled) cost T^2 = 4 times as much
  got_t2 = losses.decoupled_kd(2 * s, 2 * t, y, temperature=2.0, alpha=0.5, beta=2.0)
  assert float(got_t2) == pytest.approx(4 * (0.5 * tckd + 2.0 * nckd), rel=1e-5)


def test_dkd_term_reads_the_labels_of_the_batch():
  s, t, y = jnp.array([[0.0, 1.0, 0.0]]), jnp.zeros((1, 3)), jnp.array([0])
  got = losses.dkd({"logits": s}, {"logits": t}, {"y": y}, temperature=2.0, beta=4.0)
  assert float(got) == pytest.approx(float(losses.decoupled_kd(s, t, y, 2.0, 1.0, 4.0)),
                                     rel=1e-6)


def test_capture_returns_named_features_with_values_and_shapes():
  model = mlp((7, 5))
  params = init_params(model, (12,), jax.random.PRNGKey(0))
  x = np.random.default_rng(0).normal(size=(3, 12)).astype(np.float32)
  out, feats = model.apply(params, {"x": x}, capture=True)
  assert {k: v.shape for k, v in feats.items()} == {"Dense_0": (3, 7), "Dense_1": (3, 5),
                                                    "Dense_2": (3, 10)}
  want = x @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"]   # pre-activation output
  np.testing.assert_allclose(feats["Dense_0"], want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(feats["Dense_2"], out["logits"])


def test_capture_names_cnn_and_gru_features():
  batch = {"x": np.zeros((2, 40), np.float32)}
  cnn = build(name="cnn", channels=(4, 6), hidden=(8,), kernel_size=(5,))
  _, feats = cnn.apply(init_params(cnn, (40,), jax.random.PRNGKey(0)), batch, capture=True)
  assert feats["Conv_0"].shape == (2, 40, 4) and feats["Conv_1"].shape == (2, 20, 6)
  gru = build(name="gru", units=3)
  _, feats = gru.apply(init_params(gru, (40,), jax.random.PRNGKey(0)), batch, capture=True)
  assert feats["GRU_0"].shape == (2, 40, 6)                # both directions, every step
  assert feats["GRU_0/forward_rnn/1"].shape == (2, 40, 3)  # (carry, outputs)[1]


def test_resolve_names_the_pattern_and_lists_what_exists():
  feats = {"Dense_0": jnp.zeros((1, 4)), "Dense_1": jnp.zeros((1, 2))}
  assert features.resolve(r"Dense_1", feats, "student") == "Dense_1"
  with pytest.raises(ValueError, match=r"student feature pattern 'Conv_0' matches no .*Dense_0 "
                                       r"\(4,\)"):
    features.resolve("Conv_0", feats, "student")
  with pytest.raises(ValueError, match="matches 2"):
    features.resolve(r"Dense_\d", feats, "teacher")


@pytest.mark.parametrize("s_shape,t_shape,kernel", [((40, 12), (100,), (480, 100)),
                                                    ((5, 8), (5, 32), (8, 32)),
                                                    ((100,), (100,), None)])
def test_projection_maps_the_student_to_the_teacher_shape(s_shape, t_shape, kernel):
  p = features.init_projection(s_shape, t_shape, jax.random.PRNGKey(0))
  if kernel is None:
    assert p is None
  else:
    assert p["kernel"].shape == kernel
  out = features.project(p, jnp.ones((3,) + s_shape), t_shape)
  assert out.shape == (3,) + t_shape


def _setup(terms):
  teacher, student = mlp((16, 8)), mlp((6,))
  tp = init_params(teacher, (12,), jax.random.PRNGKey(0))
  sp = init_params(student, (12,), jax.random.PRNGKey(1))
  bound = losses.bind(terms, "distill.terms")
  resolved, proj = features.setup(bound, teacher, tp, student, sp, {"x": np.zeros((2, 12))},
                                  jax.random.PRNGKey(2))
  return teacher, student, tp, sp, bound, resolved, proj


def test_setup_projects_only_for_elementwise_terms():
  *_, resolved, proj = _setup((("kd", 1.0, {}), ("hint", 1.0, {"pairs": (("Dense_1", "Dense_0"),)})))
  assert resolved[0].index == 1 and resolved[0].pairs == (("Dense_1", "Dense_0", (8,)),)
  assert proj["term_1_pair_0"]["kernel"].shape == (6, 8)
  *_, proj = _setup((("rkd", 1.0, {"pairs": (("Dense_1", "Dense_0"),)}),))
  assert proj == {}


def test_layer_pairs_follow_the_teacher_layers_of_the_init():
  assert features.expand_layer_pairs("encoder/layer_{}", [0, 4, 5]) == (
      ("encoder/layer_0", "encoder/layer_0"), ("encoder/layer_4", "encoder/layer_1"),
      ("encoder/layer_5", "encoder/layer_2"))
  with pytest.raises(ValueError, match="keeps no teacher layers"):
    features.expand_layer_pairs("Dense_{}", None)


def _feature_only_step(terms, steps=30):
  teacher, student, tp, sp, bound, resolved, proj = _setup(terms)
  step = jax.jit(train.make_train_step(student, bound, teacher, features=resolved))
  state = train.TrainState.create(sp, train.make_optimizer(1e-2, 50), jax.random.PRNGKey(3), proj)
  batch = {"x": np.random.default_rng(0).normal(size=(32, 12)).astype(np.float32),
           "y": np.zeros(32, np.int32)}
  losses_seen = []
  for _ in range(steps):
    state, metrics = step(state, batch, tp)
    losses_seen.append(float(metrics["loss"]))
  return sp, proj, state, losses_seen


def test_feature_step_trains_projection_and_lowers_the_feature_loss():
  sp, proj, state, seen = _feature_only_step((("hint", 1.0, {"pairs": (("Dense_1", "Dense_0"),)}),))
  assert seen[-1] < 0.5 * seen[0]
  moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), proj, state.projections)
  assert min(jax.tree.leaves(moved)) > 0           # the projection was trained too
  # the head gets no gradient from a feature-only loss
  np.testing.assert_array_equal(state.params["Dense_1"]["kernel"], sp["Dense_1"]["kernel"])


def test_a_feature_term_registered_outside_the_package_trains():
  @losses.term("test_l1_feature", reads=("features",), project=True)
  def l1(teacher, student, scale=1.0):
    return scale * jnp.mean(jnp.abs(student - teacher))

  sp, proj, state, seen = _feature_only_step(
      (("test_l1_feature", 1.0, {"pairs": (("Dense_1", "Dense_0"),), "scale": 2.0}),))
  assert proj and seen[-1] < 0.7 * seen[0]
  assert not np.array_equal(state.params["Dense_0"]["kernel"], sp["Dense_0"]["kernel"])


def test_reuse_head_copies_where_shapes_fit_and_keeps_the_rest():
  t = {"Dense_2": {"kernel": np.ones((8, 10)), "bias": np.ones(10)}}
  s = {"Dense_1": {"kernel": np.zeros((8, 10)), "bias": np.zeros(10)},
       "Dense_0": {"kernel": np.zeros((3, 8)), "bias": np.zeros(8)}}
  out = features.reuse_head(t, s, [("Dense_2", "Dense_1")])
  assert (out["Dense_1"]["kernel"] == 1).all() and (out["Dense_0"]["kernel"] == 0).all()
  kept = features.reuse_head(t, s, [("Dense_2", "Dense_0")])   # (8, 10) vs (3, 8)
  assert (kept["Dense_0"]["kernel"] == 0).all()
  with pytest.raises(ValueError, match="no parameters under teacher 'Dense_9'"):
    features.reuse_head(t, s, [("Dense_9", "Dense_1")])


def _feature_run_config():
  from distill_jax.config import load
  c = load("configs/digits_mlp10_to3.py", "smoke")
  c.teacher.model.hidden, c.teacher.steps = (32, 24), 30
  c.student.model.hidden, c.student.steps, c.student.mixup = (16,), 12, 0.0
  c.student.init.strategy, c.baseline.enabled, c.eval_every = "random", False, 0
  c.checkpoint_every = 6
  pairs = {"pairs": (("Dense_1", "Dense_0"),)}             # (24,) <- (16,): a projection
  c.distill.terms = (("kd", 0.9, {"temperature": 4.0}), ("ce", 0.1, {}), ("hint", 1.0, pairs),
                     ("rkd", 1.0, pairs))
  c.distill.stage1.steps = 6
  c.distill.stage1.head = (("Dense_2", "Dense_1"),)        # (24, 10) vs (16, 10): kept
  return c


def test_a_stagewise_run_exports_the_student_without_projection_and_resumes(tmp_path):
  from distill_jax.checkpoint import Checkpointer
  from distill_jax.main import run_job
  c = _feature_run_config()
  summary = run_job(c, str(tmp_path))
  template = init_params(mlp((16,)), (64,), jax.random.PRNGKey(0))
  for phase in ("features", "student"):
    manager = Checkpointer(str(tmp_path / phase / "checkpoints")).manager
    meta = manager.item_metadata(manager.latest_step())
    saved_params = set(flatten(getattr(meta["params"], "tree", meta["params"])))
    assert saved_params == set(flatten(template)), phase      # the student and nothing else
    # the projection is training state, saved beside the optimizer state for resuming (stage
    # 2 of a stage-wise run has no feature term: no projection there)
    projections = set(flatten(dict(meta["train"].tree["projections"])))
    assert bool(projections) == (phase == "features"), projections
    manager.close()
  from distill_jax.checkpoint import read_export_meta
  exported = read_export_meta(str(tmp_path / "student" / "export"))
  assert exported["model"]["hidden"] == [16]
  # a rerun finds both phases finished and restores their state (projection included)
  again = run_job(c, str(tmp_path))
  assert again["student"]["accuracy"] == summary["student"]["accuracy"]
