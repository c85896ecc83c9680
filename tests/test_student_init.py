"""Student initialisation by keeping teacher layers (the 'select' strategy)."""
import jax
import numpy as np
import pytest

from distill_jax import recombine, train
from distill_jax.paths import count_params, flatten
from tests.helpers import mlp


def _params(model, seed):
  return train.init_params(model, (8,), jax.random.PRNGKey(seed))


def test_select_copies_chosen_teacher_layers_and_head():
  teacher = _params(mlp((5,) * 9, num_classes=3), 0)   # 10 Dense layers
  student = _params(mlp((5, 5), num_classes=3), 1)     # 3 Dense layers
  params, report = recombine.STRATEGIES.get("select")(teacher, student, layers=(0, 5, -1))
  for s_name, t_name in (("Dense_0", "Dense_0"), ("Dense_1", "Dense_5"), ("Dense_2", "Dense_9")):
    for leaf in ("kernel", "bias"):
      np.testing.assert_array_equal(params[s_name][leaf], teacher[t_name][leaf])
  assert report["teacher_layers"] == [0, 5, 9]
  # hand count: (8*5+5) + (5*5+5) + (5*3+3) = 45 + 30 + 18
  assert report["reused_params"] == 93 == count_params(params)


def test_select_keeps_student_shapes_and_rejects_mismatches():
  teacher = _params(mlp((6,) * 3), 0)
  student = _params(mlp((5,)), 1)
  with pytest.raises(ValueError, match=r"teacher 'Dense_0/kernel' has shape \(8, 6\) but student "
                                       r"'Dense_0/kernel' has shape \(8, 5\)"):
    recombine.select(teacher, student, layers=(0, 3))


def test_select_rejects_wrong_depth_and_out_of_range_layers():
  teacher, student = _params(mlp((5,) * 3), 0), _params(mlp((5,)), 1)
  with pytest.raises(ValueError, match="3 teacher layers .* student of depth 2"):
    recombine.select(teacher, student, layers=(0, 1, 3))
  with pytest.raises(ValueError, match="layer 7 is out of range for a teacher of depth 4"):
    recombine.select(teacher, student, layers=(0, 7))


def test_random_strategy_reuses_nothing():
  teacher, student = _params(mlp((5,) * 3), 0), _params(mlp((5,)), 1)
  params, report = recombine.STRATEGIES.get("random")(teacher, student, layers=(0, 1))
  assert report["reused_params"] == 0
  assert flatten(params).keys() == flatten(student).keys()
