"""Recombination strategies, similarity measures and parameter accounting."""
import json

import jax
import numpy as np
import pytest

from distill_jax import recombine
from distill_jax.paths import count_params, flatten
from distill_jax.recombine.similarity import linear_cka, merge_adjacent, weight_cosine
from distill_jax.recombine.strategies import consecutive_blocks, plan_layers
from tests.helpers import init_params, mlp

RULES = (("depth", r"Dense_(\d+)"),)


def _params(hidden, seed, num_classes=3):
  return init_params(mlp(hidden, num_classes), (8,), jax.random.PRNGKey(seed))


def _shapes(tree):
  return {k: v.shape for k, v in flatten(tree).items()}


TEACHER = _params((5,) * 9, 0)       # 10 Dense layers: 8->5, 8 x 5->5, 5->3
STUDENT = _params((5, 5), 1)          # 3 Dense layers


def _run(strategy, student=STUDENT, **kw):
  return recombine.recombine(TEACHER, student, strategy=strategy, rules=RULES, **kw)


def test_plan_layers_list_every_and_evenly():
  assert plan_layers(10, 3, layers=(0, 5, -1)) == [0, 5, 9]
  assert plan_layers(10, 3, every=5) == [0, 5, 9]        # 0, 5 and the head
  assert plan_layers(10, 3) == [0, 4, 9]               # linspace(0, 9, 3) = 0, 4.5, 9 rounded
  assert plan_layers(10, 4) == [0, 3, 6, 9]
  with pytest.raises(ValueError, match="impossible target: the student has 11 layers, the "
                                       "teacher only 10"):
    plan_layers(10, 11)
  with pytest.raises(ValueError, match=r"keeps teacher layers \[0, 3, 6, 9\] \(4\) but the "
                                       r"student has 3"):
    plan_layers(10, 3, every=3)


def test_select_copies_teacher_layers_exactly_and_keeps_student_shapes():
  params, report = _run("select", layers=(0, 5, 9))
  assert _shapes(params) == _shapes(STUDENT)
  for s, t in (("Dense_0", "Dense_0"), ("Dense_1", "Dense_5"), ("Dense_2", "Dense_9")):
    for leaf in ("kernel", "bias"):
      np.testing.assert_array_equal(params[s][leaf], TEACHER[t][leaf])
  assert report["teacher_layers"] == [0, 5, 9]


def test_average_uses_uneven_consecutive_blocks_and_averages_fitting_layers():
  assert consecutive_blocks(10, 3) == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
  params, report = _run("average")
  assert report["blocks"] == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
  # layer 0 is the only 8->5 layer of block 0 and layer 9 the only 5->3 of block 2: copied
  np.testing.assert_array_equal(params["Dense_0"]["kernel"], TEACHER["Dense_0"]["kernel"])
  np.testing.assert_array_equal(params["Dense_2"]["kernel"], TEACHER["Dense_9"]["kernel"])
  want = np.mean([TEACHER[f"Dense_{i}"]["kernel"] for i in (4, 5, 6)], axis=0)
  np.testing.assert_allclose(params["Dense_1"]["kernel"], want, rtol=1e-6)
  assert report["teacher_groups_used"]["layer_1"] == ["layer_4", "layer_5", "layer_6"]


def test_linear_cka_matches_the_hsic_formula_and_its_invariances():
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(40, 6)), rng.normal(size=(40, 9))
  h = np.eye(40) - 1.0 / 40
  k, l = x @ x.T, y @ y.T
  hsic = lambda a, b: np.trace(a @ h @ b @ h)
  assert linear_cka(x, y) == pytest.approx(hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l)), 1e-9)
  q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
  assert linear_cka(x, 3.0 * x @ q) == pytest.approx(1.0, abs=1e-9)
  # wide activations (more features than examples) take the Gram-matrix route: same formula
  xw, yw = rng.normal(size=(10, 50)), rng.normal(size=(10, 70))
  hw = np.eye(10) - 1.0 / 10
  kw, lw = xw @ xw.T, yw @ yw.T
  hsic_w = lambda a, b: np.trace(a @ hw @ b @ hw)
  assert linear_cka(xw, yw) == pytest.approx(
      hsic_w(kw, lw) / np.sqrt(hsic_w(kw, kw) * hsic_w(lw, lw)), 1e-9)
  assert weight_cosine({"w": np.ones(3)}, {"w": -np.ones(3)}) == pytest.approx(-1.0)
  assert weight_cosine({"w": np.ones(3)}, {"w": np.ones(4)}) == 0.0


def test_merge_adjacent_merges_the_most_similar_pair_first():
  sim = np.array([[1, .2, .1, .1], [.2, 1, .9, .3], [.1, .9, 1, .4], [.1, .3, .4, 1]])
  assert merge_adjacent(sim, 3) == [[0], [1, 2], [3]]
  assert merge_adjacent(sim, 2) == [[0], [1, 2, 3]]
  with pytest.raises(ValueError, match="impossible target"):
    merge_adjacent(sim, 5)


@pytest.mark.parametrize("mode", ["merge", "drop"])
def test_similarity_with_data_saves_heatmap_and_json(tmp_path, mode):
  teacher = mlp((5,) * 9, 3)
  x = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
  ctx = recombine.Context(teacher, TEACHER, {"x": x}, str(tmp_path))
  params, report = _run("similarity", context=ctx, mode=mode)
  assert _shapes(params) == _shapes(STUDENT)
  saved = json.loads((tmp_path / "similarity.json").read_text())
  assert saved["measure"] == "cka" and np.array(saved["matrix"]).shape == (10, 10)
  assert (tmp_path / "similarity.png").stat().st_size > 1000
  blocks = report["blocks"]
  assert sorted(i for b in blocks for i in b) == list(range(10)) and len(blocks) == 3
  # the input layer and the head have shapes of their own: they stay alone
  assert blocks[0] == [0] and blocks[-1] == [9]
  kept = blocks[1][0]
  if mode == "drop":
    np.testing.assert_array_equal(params["Dense_1"]["kernel"], TEACHER[f"Dense_{kept}"]["kernel"])
  else:
    want = np.mean([TEACHER[f"Dense_{i}"]["kernel"] for i in blocks[1]], axis=0)
    np.testing.assert_allclose(params["Dense_1"]["kernel"], want, rtol=1e-6)


def test_similarity_without_data_falls_back_to_weight_cosine():
  _, report = _run("similarity")
  assert report["measure"] == "cosine"


def test_width_slices_consistently_so_dead_units_can_be_removed_exactly():
  # A teacher with 4 of its 9 hidden units dead (zero in and out): the 5-unit student that
  # keeps the live ones by weight norm computes exactly the teacher's function.
  teacher_model, student_model = mlp((9, 9), 3), mlp((5, 5), 3)
  t = jax.tree.map(np.array, _params((9, 9), 2))
  dead = [1, 3, 4, 7]
  for layer in ("Dense_0", "Dense_1"):
    t[layer]["kernel"][..., dead] = 0.0
    t[layer]["bias"][dead] = 0.0
  t["Dense_1"]["kernel"][dead, :] = 0.0
  t["Dense_2"]["kernel"][dead, :] = 0.0
  params, report = recombine.recombine(t, _params((5, 5), 3), strategy="width", rules=RULES)
  assert _shapes(params) == _shapes(_params((5, 5), 3))
  assert report["reused_params"] == count_params(params)
  x = np.random.default_rng(1).normal(size=(16, 8)).astype(np.float32)
  np.testing.assert_allclose(student_model.apply(params, {"x": x})[0]["logits"],
                             teacher_model.apply(t, {"x": x})[0]["logits"], rtol=1e-5, atol=1e-6)


def test_width_by_activation_keeps_the_most_active_units():
  teacher = mlp((9,), 3)
  t = jax.tree.map(np.array, _params((9,), 2))
  t["Dense_0"]["bias"][:] = np.arange(9) * 10.0      # unit 8 most active, then 7, 6...
  x = np.zeros((4, 8), np.float32)
  ctx = recombine.Context(teacher, t, {"x": x})
  params, _ = recombine.recombine(t, _params((3,), 3), strategy="width", rules=RULES,
                                  context=ctx, importance="activation")
  np.testing.assert_array_equal(params["Dense_0"]["bias"], [60.0, 70.0, 80.0])
  np.testing.assert_array_equal(params["Dense_1"]["kernel"], t["Dense_1"]["kernel"][6:9])


def test_accounting_equals_hand_counts():
  teacher, student = _params((5,) * 3, 0), _params((5,), 1)      # 4 and 2 Dense layers
  params, report = recombine.recombine(teacher, student, strategy="select", rules=RULES,
                                       layers=(0, -1))
  # teacher: 8*5+5=45, 5*5+5=30, 30, 5*3+3=18 -> m = 123 in n = 4 groups
  assert report["teacher_params"] == 123 and report["teacher_groups"] == 4
  assert report["teacher_group_sizes"] == {"layer_0": 45, "layer_1": 30, "layer_2": 30,
                                           "layer_3": 18}
  assert report["student_params"] == 63 == count_params(params)
  assert report["reused_params"] == 63 and report["new_params"] == 0
  assert report["compression"] == pytest.approx(123 / 63)
  _, rand = recombine.recombine(teacher, student, strategy="random", rules=RULES)
  assert rand["reused_params"] == 0 and rand["new_params"] == 63
  text = recombine.format_accounting(report)
  assert "m = 123" in text and "M = 63" in text and "M' = 63" in text


def test_shape_mismatch_names_paths_and_shapes():
  wide = _params((7, 7), 1)
  with pytest.raises(ValueError, match=r"student layer_0/Dense_\*/kernel has shape \(8, 7\); no "
                                       r"teacher array fits it \(candidates: "
                                       r"\{'layer_0/Dense_\*/kernel': \(8, 5\)\}\)"):
    _run("select", student=wide, layers=(0, 5, 9))


def test_student_without_layer_groups_is_an_error():
  with pytest.raises(ValueError, match="no layer_<i> groups"):
    recombine.recombine(TEACHER, STUDENT, strategy="select",
                        rules=[("regex", ".*", "everything")])
