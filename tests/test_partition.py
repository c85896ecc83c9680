"""Partition rules: exact round trips, first match wins, unclaimed errors, depth/role/user rules."""
import logging

import jax
import numpy as np
import pytest

from distill_jax import partition as P
from distill_jax.paths import flatten
from tests.helpers import build, init_params, mlp


def _mlp_params(hidden=(5,) * 9):
  return init_params(mlp(hidden, num_classes=3), (8,), jax.random.PRNGKey(0))


def _assert_same_tree(a, b):
  assert flatten(a).keys() == flatten(b).keys()
  jax.tree.map(np.testing.assert_array_equal, a, b)


HAND_BUILT = {   # an arbitrary Flax-like tree, never seen by the library
    "embed": {"table": np.arange(12.0).reshape(4, 3)},
    "encoder": {"layer_0": {"attn": {"w": np.ones((3, 3))}, "mlp": {"w": np.full((3, 6), 2.0)}},
                "layer_1": {"attn": {"w": np.ones((3, 3)) * 3}, "mlp": {"w": np.zeros((3, 6))}}},
    "scan": {"w": np.arange(24.0).reshape(4, 3, 2), "b": np.arange(8.0).reshape(4, 2)},
    "head": {"kernel": np.ones((3, 2)), "bias": np.zeros(2)},
}


@pytest.mark.parametrize("rules", [
    [("depth", r"Dense_(\d+)")],
    [("role",)],
    [("depth", r"Dense_(\d+)", {"ranges": [(0, 4), (4, 10)]})],
    [("depth", r"Dense_(\d+)", {"block": 3})],
    [("depth", r"Dense_(\d+)", {"stride": 2})],
    [("regex", r"Dense_(\d)/(.*)", r"d\1_\2")],
])
def test_partition_then_combine_gives_back_the_identical_mlp(rules):
  params = _mlp_params()
  _assert_same_tree(P.combine(P.partition(params, rules)), params)


def test_round_trip_and_groups_on_a_hand_built_tree_with_stacked_layers():
  rules = [("depth", r"encoder/layer_(\d+)"), ("depth", None, {"stacked": r"scan/.*"}),
           ("regex", r"embed/.*", "stem"), ("regex", ".*", "rest")]
  parts = P.partition(HAND_BUILT, rules)
  assert parts.names == ["stem", "layer_0", "layer_1", "layer_2", "layer_3", "rest"]
  # encoder layers 0, 1 and stacked slices 0..3 share layer groups 0 and 1
  assert sorted(parts.groups["layer_1"]) == ["encoder/layer_*/attn/w", "encoder/layer_*/mlp/w",
                                             "scan/b", "scan/w"]
  np.testing.assert_array_equal(parts.groups["layer_2"]["scan/w"], HAND_BUILT["scan"]["w"][2])
  assert parts.groups["layer_3"]["scan/b"].shape == (2,)
  assert parts.sizes()["layer_3"] == 3 * 2 + 2
  _assert_same_tree(P.combine(parts), HAND_BUILT)


def test_first_matching_rule_wins_and_claims_are_logged(caplog):
  params = _mlp_params((5, 5))
  rules = [("regex", r"Dense_0/.*", "stem"), ("regex", r"Dense_\d+/kernel", "kernels"),
           ("regex", ".*", "rest")]
  with caplog.at_level(logging.INFO, logger="distill_jax.partition.core"):
    parts = P.partition(params, rules)
  assert set(parts.groups["stem"]) == {"Dense_0/kernel", "Dense_0/bias"}
  assert set(parts.groups["kernels"]) == {"Dense_1/kernel", "Dense_2/kernel"}
  assert set(parts.groups["rest"]) == {"Dense_1/bias", "Dense_2/bias"}
  by_path = {c.path: c.rule for c in parts.claims}
  assert by_path["Dense_0/kernel"].startswith("rule 0") and by_path["Dense_1/bias"].startswith("rule 2")
  assert len([r for r in caplog.records if "partition: " in r.getMessage()]) == 6
  assert any("Dense_0/kernel -> stem" in r.getMessage() for r in caplog.records)


def test_unclaimed_parameters_are_an_error_listing_them():
  with pytest.raises(ValueError, match=r"2 parameter\(s\) claimed by no partition rule: "
                                       r"\['head/kernel', 'head/bias'\]"):
    P.partition(HAND_BUILT, [("regex", r"(embed|encoder|scan)/.*", "body")])


def test_depth_groupings_by_ranges_block_and_stride():
  params = _mlp_params()   # Dense_0 .. Dense_9
  names = lambda **kw: P.partition(params, [("depth", r"Dense_(\d+)", kw)]).names
  assert names(ranges=[(0, 1), (1, 9), (9, 10)]) == ["layers_0-0", "layers_1-8", "layers_9-9"]
  assert names(block=4) == ["block_0", "block_1", "block_2"]
  assert names(stride=3) == ["stride_0", "stride_1", "stride_2"]
  parts = P.partition(params, [("depth", r"Dense_(\d+)", {"stride": 3})])
  assert {k.split("/")[0] for k in parts.groups["stride_1"]} == {"Dense_1", "Dense_4", "Dense_7"}


def test_role_rule_uses_model_order_even_when_keys_are_sorted_as_strings():
  params = _mlp_params()
  shuffled = {k: params[k] for k in sorted(params)}   # Dense_0, Dense_1, Dense_10?.. Dense_9
  parts = P.partition(shuffled, [("role", r"Dense_(\d+)", {"stem": 2, "head": 1})])
  owners = {c.path.split("/")[0]: c.group for c in parts.claims}
  assert owners["Dense_0"] == owners["Dense_1"] == "stem"
  assert owners["Dense_9"] == "head" and owners["Dense_8"] == "body"


def test_role_rule_on_the_cnn():
  cnn = build(name="cnn", channels=(4, 8), hidden=(16,))
  params = init_params(cnn, (8, 8), jax.random.PRNGKey(0))
  parts = P.partition(params, [("role",)])
  assert {c.path.split("/")[0]: c.group for c in parts.claims} == {
      "Conv_0": "stem", "Conv_1": "body", "Dense_0": "body", "Dense_1": "head"}
  _assert_same_tree(P.combine(parts), params)


def test_a_registered_user_rule_is_usable_by_name():
  @P.register("test_by_rank")
  def by_rank():
    def rule(paths, leaves):
      return {p: (f"rank{np.ndim(leaves[p])}", p) for p in paths}
    return rule

  parts = P.partition(HAND_BUILT, [("test_by_rank",)])
  assert set(parts.names) == {"rank1", "rank2", "rank3"}
  assert set(parts.groups["rank3"]) == {"scan/w"}
  _assert_same_tree(P.combine(parts), HAND_BUILT)


def test_unknown_rule_kind_and_key_collisions_are_clear_errors():
  with pytest.raises(KeyError, match="unknown partition rule 'dpeth'"):
    P.partition(HAND_BUILT, [("dpeth", r"x_(\d+)")])
  # "Dense_0" and "Dense_00" are both layer 0 with the same layer-relative key
  with pytest.raises(ValueError, match=r"group 'layer_0' would hold two parameters under key "
                                       r"'Dense_\*/w' \(second: 'Dense_00/w'\)"):
    P.partition({"Dense_0": {"w": np.ones(2)}, "Dense_00": {"w": np.ones(2)}},
                [("depth", r"Dense_(\d+)")])
