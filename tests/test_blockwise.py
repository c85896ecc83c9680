"""Blockwise training and stitching: stack views, block targets, separate = sequential block
jobs, least-squares stitches, the budgeted choice against brute force, the whole job."""
import glob
import json
import os

import jax
import numpy as np
import pytest

from distill_jax import blockwise, models, runner
from distill_jax.blockwise import jobs, layout
from distill_jax.errors import InputError
from distill_jax.main import run_job
from helpers import toy_config, toy_data

HIDDEN = (12, 12, 12, 12)


def _teacher(seed=0, hidden=HIDDEN):
  model = models.build({"name": "mlp", "hidden": hidden}, {"num_classes": 10})
  params = model.init(jax.random.PRNGKey(seed), {"x": np.zeros((1, 64), np.float32)})
  return model, params


def _stack(model, params, info=None):
  return layout.teacher_stack(model, params, info or {"num_classes": 10}, "t")


def _relu_dense(p, x):
  return np.maximum(x @ np.asarray(p["kernel"]) + np.asarray(p["bias"]), 0.0)


def test_block_targets_are_the_teachers_hidden_states_on_the_fly_and_cached(tmp_path):
  model, params = _teacher()
  t = _stack(model, params)
  data = toy_data()
  groups = [(0, 1), (2, 3)]
  x = data.train["x"][:5]
  h = [x]
  for i in range(4):
    h.append(_relu_dense(params[f"Dense_{i}"], h[-1]))
  online = layout.block_data(data, t, groups, 1)
  batch = online.rows(np.arange(5))
  np.testing.assert_allclose(batch["block_in"], h[2], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(batch["block_out"], h[4], rtol=1e-5, atol=1e-6)
  cached = layout.block_data(data, t, groups, 1, str(tmp_path / "cache"))
  np.testing.assert_allclose(cached.rows(np.arange(5))["block_out"], h[4], rtol=1e-5,
                             atol=1e-6)
  assert os.path.exists(tmp_path / "cache" / "key.json")


@pytest.mark.parametrize("family", ["mlp", "bert", "llama"])
def test_the_teacher_as_kept_blocks_gives_the_teachers_outputs(family):
  if family == "mlp":
    model, params = _teacher()
    batch, info = {"x": np.random.default_rng(0).normal(size=(3, 64)).astype(np.float32)}, \
        {"num_classes": 10}
    groups, key = [(0,), (1, 2), (3,)], "logits"
  else:
    fields = (dict(name="bert", vocab_size=50, hidden_size=16, num_layers=3, num_heads=2,
                   intermediate_size=32, max_position=16) if family == "bert" else
              dict(name="llama", vocab_size=50, hidden_size=16, num_layers=3, num_heads=2,
                   num_kv_heads=1, intermediate_size=32))
    model, info = models.build(fields, {}), {}
    ids = np.random.default_rng(0).integers(1, 50, (2, 7)).astype(np.int32)
    batch = ({"input_ids": ids, "attention_mask": np.array([[1] * 7, [1] * 4 + [0] * 3]),
              "token_type_ids": np.zeros_like(ids)} if family == "bert" else {"tokens": ids})
    params = model.init(jax.random.PRNGKey(0), batch)
    groups, key = [(0,), (1, 2)], ("pooled" if family == "bert" else "logits")
  t = _stack(model, params, info)
  stitched = models.build({"name": f"{family}_stitched", "base": t.base,
                           "blocks": ["keep"] * len(groups), "groups": groups}, info)
  _, sparams = layout.as_stitched(t, groups)
  want = model.apply(params, batch)[0][key]
  got = stitched.apply(sparams, batch)[0][key]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_least_squares_matches_the_hand_solution():
  x = np.array([[0.0], [1.0], [2.0]])
  w, b = blockwise.least_squares(x, 2 * x + 1, ridge=0.0)
  np.testing.assert_allclose(w, [[2.0]], atol=1e-6)
  np.testing.assert_allclose(b, [1.0], atol=1e-6)
  # Two inputs, an exact affine map: y = x @ [[1, 2], [3, 4]] + [5, 6].
  x = np.random.default_rng(0).normal(size=(20, 2))
  w, b = blockwise.least_squares(x, x @ np.array([[1.0, 2.0], [3.0, 4.0]]) + [5.0, 6.0],
                                 ridge=0.0)
  np.testing.assert_allclose(w, [[1, 2], [3, 4]], atol=1e-5)
  np.testing.assert_allclose(b, [5, 6], atol=1e-5)
  with pytest.raises(InputError, match=r"\(3, 1\) and \(2, 1\)"):
    blockwise.least_squares(np.zeros((3, 1)), np.zeros((2, 1)))


def test_model_stitching_a_model_to_itself_is_the_identity():
  model, params = _teacher()
  t = _stack(model, params)
  sample = {"x": np.random.default_rng(1).normal(size=(64, 64)).astype(np.float32)}
  module, sparams = blockwise.stitch_models(t, t, 2, sample)
  live = np.asarray(layout.as_stitched(t, [(0, 1)], head=False)[0].apply(
      {"params": layout.as_stitched(t, [(0, 1)], head=False)[1]}, sample["x"],
      boundaries=True)[1]).max(0) > 0
  kernel = np.asarray(sparams["stitch_0"]["kernel"])
  # Units that are zero on every sample carry no information: only the live ones must map
  # to themselves.
  np.testing.assert_allclose(kernel[np.ix_(live, live)], np.eye(live.sum()), atol=1e-3)
  out = module.apply({"params": sparams}, sample["x"])
  np.testing.assert_allclose(out, model.apply(params, sample)[0]["logits"], atol=1e-3)


def test_a_stitch_joins_models_of_different_widths():
  """B's first layer is A's first two units (same weights), so B's hidden state at the cut is
  an exact linear image of A's: the least-squares stitch recovers it and the stitched model
  gives B's outputs."""
  a, a_params = _teacher(hidden=(4, 6))
  b, b_params = _teacher(seed=5, hidden=(2, 6))
  b_params = dict(b_params, Dense_0={"kernel": a_params["Dense_0"]["kernel"][:, :2],
                                     "bias": a_params["Dense_0"]["bias"][:2]})
  ta, tb = _stack(a, a_params), _stack(b, b_params)
  sample = {"x": np.random.default_rng(2).normal(size=(256, 64)).astype(np.float32)}
  module, params = blockwise.stitch_models(ta, tb, 1, sample)
  assert params["stitch_0"]["kernel"].shape == (4, 2)
  stitched = models.build({"name": "mlp_stitched", "base": ta.base, "blocks": ["keep"] * 2,
                           "groups": [[0], [1]], "stitch": [True, False],
                           "bases": [ta.base, tb.base]}, {"num_classes": 10})
  np.testing.assert_allclose(stitched.apply(params, sample)[0]["logits"],
                             b.apply(b_params, sample)[0]["logits"], atol=1e-4)
  np.testing.assert_allclose(module.apply({"params": params}, sample["x"]),
                             b.apply(b_params, sample)[0]["logits"], atol=1e-4)


def test_budgeted_choice_equals_brute_force():
  rng = np.random.default_rng(0)
  for trial in range(20):
    blocks, variants = rng.integers(2, 5), rng.integers(2, 4)
    costs = rng.integers(0, 10, (blocks, variants)).tolist()
    scores = rng.random((blocks, variants)).round(3).tolist()
    cheapest = int(sum(min(c) for c in costs))
    for budget in (cheapest, cheapest + 3, cheapest + 10, 100):
      got = blockwise.choose(costs, scores, budget)
      want = blockwise.brute_force(costs, scores, budget)
      assert got[1] == pytest.approx(want[1]) and got[2] <= budget, (costs, scores, budget)
  with pytest.raises(InputError, match="cheapest costs 3"):
    blockwise.choose([[1, 2], [2, 5]], [[0, 0], [0, 0]], 2)


def _config(tmp_path, **overrides):
  c = toy_config(**{"teacher.model.hidden": HIDDEN, "teacher.steps": 20, "student.steps": 4,
                    "student.model": {"name": "mlp_stitched", "blocks": ("layers=1",) * 2},
                    "student.init.strategy": "blockwise", "student.init.num_examples": 32,
                    "batch_size": 16, **overrides})
  with c.unlocked():
    c.student.init.blockwise.steps = 6
  return c


def test_blocks_trained_separately_equal_blocks_trained_in_one_process(tmp_path):
  data = toy_data()
  config = _config(tmp_path)
  run = runner.start(config, str(tmp_path / "all"), data, metrics=False)
  teacher, tparams = _teacher(seed=3)
  student = runner.student_model(config, data, teacher)
  params, report = blockwise.assemble(run, student, teacher, tparams)
  alone = runner.start(config, str(tmp_path / "alone"), data, metrics=False)
  block1 = blockwise.train_only(alone, student, teacher, tparams, 1)["layers=1"]
  assert [os.path.basename(p)[:8] for p in glob.glob(str(tmp_path / "alone" / "blocks" / "*"))] \
      == ["block_1_"]
  jax.tree.map(np.testing.assert_array_equal, block1, params["block_1"])
  assert report["strategy"] == "blockwise" and report["student_params"] == sum(
      np.size(v) for v in jax.tree.leaves(params))
  assert report["blocks"]["block_1"]["teacher_layers"] == [2, 3]
  with pytest.raises(InputError, match="only=2: the student has 2 blocks"):
    blockwise.train_only(alone, student, teacher, tparams, 2)


def test_the_job_assembles_under_a_budget_and_distils_end_to_end(tmp_path):
  layer = 12 * 12 + 12
  config = _config(tmp_path, **{"student.model": {"name": "mlp_stitched",
                                                  "blocks": ("keep",) * 2}})
  with config.unlocked():
    config.student.init.blockwise.variants = ("keep", "layers=1", "drop")
    # the head (130) + the stitch (12 -> 12) + block 0 as one layer (64 -> 12: 780) + block 1
    # kept (two 12 -> 12 layers)
    config.student.init.blockwise.budget = 130 + layer + 780 + 2 * layer
    config.student.init.blockwise.stitch = True
  summary = run_job(config, str(tmp_path / "job"))
  assembly = json.load(open(tmp_path / "job" / "assembly.json"))
  assert summary["student"]["params"] <= config.student.init.blockwise.budget
  # Dropping block 0 would change the width (64 -> 12): that variant is not offered there.
  assert sorted(assembly["variants"]) == ["block_0/keep", "block_0/layers=1", "block_1/drop",
                                          "block_1/keep", "block_1/layers=1"]
  # Brute force over the recorded scores agrees with the choice.
  names = [[v for v in assembly["variants"] if v.startswith(f"block_{j}/")] for j in range(2)]
  costs = [[assembly["variants"][v]["params"] for v in n] for n in names]
  scores = [[1 - assembly["variants"][v]["agreement"] for v in n] for n in names]
  assert assembly["fixed_params"] == 130 + layer
  best = blockwise.brute_force(costs, scores, assembly["budget"] - 130 - layer)
  assert assembly["summed_disagreement"] == pytest.approx(best[1])
  assert summary["student"]["init"]["stitch_params"] == layer   # one stitch, 12 -> 12
  assert "accuracy" in summary["student"]["at_init"]


def test_a_bad_block_spec_names_it():
  with pytest.raises(InputError, match="'layers=two'"):
    models.build({"name": "mlp_stitched", "base": {"hidden": [4]}, "blocks": ["layers=two"],
                  "groups": [[0]]}, {"num_classes": 3})



def test_a_block_job_trains_only_its_block_and_says_so(tmp_path):
  config = _config(tmp_path)
  with config.unlocked():
    config.student.init.blockwise.only = 0
  summary = run_job(config, str(tmp_path / "job"))
  assert summary["block"] == 0 and summary["variants"] == {"layers=1": 64 * 12 + 12}
  assert [os.path.basename(p)[:8] for p in glob.glob(str(tmp_path / "job" / "blocks" / "*"))] \
      == ["block_0_"]
  assert not os.path.exists(tmp_path / "job" / "student")


@pytest.mark.parametrize("family", ["mlp", "bert", "llama"])
def test_a_stitched_student_without_stitches_is_the_familys_own_model(family):
  from distill_jax.models.stack import plain
  if family == "mlp":
    base, info = {"hidden": [12, 12, 12, 12]}, {"num_classes": 10}
    batch = {"x": np.random.default_rng(0).normal(size=(3, 64)).astype(np.float32)}
    blocks, key = ["layers=2,width=5", "keep", "drop"], "logits"
    groups = [[0], [1, 2], [3]]
  else:
    base = (dict(vocab_size=50, hidden_size=16, num_layers=4, num_heads=2, intermediate_size=32,
                 max_position=16) if family == "bert" else
            dict(vocab_size=50, hidden_size=16, num_layers=4, num_heads=2, num_kv_heads=1,
                 intermediate_size=32))
    ids = np.random.default_rng(0).integers(1, 50, (2, 7)).astype(np.int32)
    batch = ({"input_ids": ids, "attention_mask": np.array([[1] * 7, [1] * 4 + [0] * 3]),
              "token_type_ids": np.zeros_like(ids)} if family == "bert" else {"tokens": ids})
    blocks, key, info = ["layers=1", "keep", "drop"], ("pooled" if family == "bert" else
                                                       "logits"), {}
    groups = [[0], [1, 2], [3]]
  stitched = models.build({"name": f"{family}_stitched", "base": base, "blocks": blocks,
                           "groups": groups}, info)
  params = stitched.init(jax.random.PRNGKey(1), batch)
  config, own = plain(stitched.config, params)
  model = models.build(config, info)
  assert jax.tree.map(np.shape, own) == jax.tree.map(
      np.shape, model.init(jax.random.PRNGKey(0), batch))
  np.testing.assert_allclose(model.apply(own, batch)[0][key],
                             stitched.apply(params, batch)[0][key], rtol=1e-5, atol=1e-5)
  assert plain(dict(stitched.config, stitch=[True, False, False])) is None


def test_the_students_own_fields_override_the_teachers_and_key_its_blocks(tmp_path):
  teacher, tparams = _teacher()
  plain_config = _config(tmp_path)
  own = _config(tmp_path, **{"student.model": {"name": "mlp_stitched", "blocks": ("layers=1",) * 2,
                                               "dropout": 0.3}})
  fields = blockwise.student_fields(own, teacher)
  assert fields["base"]["dropout"] == 0.3 and fields["base"]["hidden"] == list(HIDDEN)
  assert blockwise.student_fields(plain_config, teacher)["base"]["dropout"] == 0.0
  keys = [jobs.block_key(runner.start(c, str(tmp_path / "w"), toy_data(), metrics=False),
                         _stack(teacher, tparams), [(0, 1), (2, 3)], 0, "layers=1")
          for c in (plain_config, own)]
  assert keys[0] != keys[1]
