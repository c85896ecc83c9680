"""Meshes and sharding rules: specs by first match, clear errors for bad rules."""
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from distill_jax import sharding
from distill_jax.paths import tree_paths

FAKE_MESH = type("Mesh", (), {"shape": {"data": 2, "fsdp": 4}, "axis_names": ("data", "fsdp")})()
TREE = {"params": {"Dense_0": {"kernel": np.zeros((64, 32)), "bias": np.zeros(32)},
                   "Dense_1": {"kernel": np.zeros((32, 10)), "bias": np.zeros(10)}},
        "step": np.zeros(())}


def test_specs_come_from_the_first_matching_rule():
  rules = ((r"params/Dense_0/kernel", (None, "fsdp")), (r".*kernel", ("fsdp",)), (".*", ()))
  specs = tree_paths(sharding.tree_specs(TREE, rules, FAKE_MESH))
  assert specs["params/Dense_0/kernel"] == P(None, "fsdp")
  assert specs["params/Dense_1/kernel"] == P("fsdp")
  assert specs["params/Dense_0/bias"] == P() and specs["step"] == P()


def test_a_path_no_rule_claims_is_an_error_naming_it():
  with pytest.raises(ValueError, match=r"claimed by no sharding rule: \['params/Dense_0/bias', "
                                       r"'params/Dense_1/bias', 'step'\]"):
    sharding.tree_specs(TREE, ((r".*kernel", ()),), FAKE_MESH)


@pytest.mark.parametrize("rule,match", [
    ((r".*Dense_1/kernel", (None, "fsdp")),
     r"'params/Dense_1/kernel' has shape \(32, 10\); dimension 1 \(10\) is not divisible by "
     r"mesh axis 'fsdp' of size 4"),
    ((r".*Dense_1/bias", (("data", "fsdp"),)),
     r"dimension 0 \(10\) is not divisible by mesh axis \('data', 'fsdp'\) of size 8"),
    ((r".*Dense_1/bias", (None, "fsdp")), r"spec \(None, 'fsdp'\) has 2 entries but "
                                          r"'params/Dense_1/bias' has shape \(10,\)"),
    ((r".*Dense_1/kernel", ("model",)), r"mesh has no axis \['model'\]"),
])
def test_bad_specs_are_errors_naming_path_and_shape(rule, match):
  with pytest.raises(ValueError, match=match):
    sharding.tree_specs(TREE, (rule, (".*", ())), FAKE_MESH)


def test_mesh_shapes():
  mesh = sharding.make_mesh({"data": -1})
  assert mesh.axis_names == ("data",) and sharding.batch_size_per_step(mesh) == mesh.size
  with pytest.raises(ValueError, match="at most one axis may have size -1"):
    sharding.make_mesh({"data": -1, "fsdp": -1})
  with pytest.raises(ValueError, match=r"needs 3 devices"):
    sharding.make_mesh({"data": 3}, devices=mesh.devices.ravel().tolist()[:1])
