"""Orbax round trips, exports, and exact resumption of a stopped phase (through the runner)."""
import jax
import numpy as np
import pytest

from distill_jax import losses, runner, train
from distill_jax.checkpoint import Checkpointer, load_export_params, read_export_meta, save_export
from distill_jax.errors import InputError, MissingInput
from tests.helpers import fixed_batch, mlp, state_for, toy_config, toy_data


def _assert_trees_equal(a, b):
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, a),
               jax.tree.map(np.asarray, b))


def _trained_state():
  model = mlp((16, 16))
  state = state_for(model)
  step = jax.jit(train.make_train_step(model, losses.bind((("ce", 1.0),), "terms")))
  for i in range(3):
    state, _ = step(state, fixed_batch(seed=i))
  return model, state


def test_save_restore_round_trip_is_identical(tmp_path):
  model, state = _trained_state()
  ckpt = Checkpointer(str(tmp_path / "ckpt"))
  ckpt.save(state, {"data": {"epoch": 0, "index_in_epoch": 3}})
  ckpt.wait()
  template = state_for(model)  # fresh values, same structure
  restored, meta = ckpt.restore(template)
  _assert_trees_equal(restored.params, state.params)
  _assert_trees_equal(restored.opt_state, state.opt_state)
  assert type(restored.opt_state[0]) is type(state.opt_state[0])  # optax types survive
  assert int(restored.step) == 3 and meta["step"] == 3
  assert meta["data"] == {"epoch": 0, "index_in_epoch": 3}
  ckpt.close()


def test_an_export_round_trips_and_refuses_other_shapes(tmp_path):
  model, state = _trained_state()
  example = fixed_batch(n=2)
  save_export(str(tmp_path / "export"), model, state.params, {"num_classes": 10}, example)
  meta = read_export_meta(str(tmp_path / "export"))
  assert meta == {"model": {"name": "mlp", "hidden": [16, 16], "dropout": 0.0},
                  "info": {"num_classes": 10}}
  loaded, params = runner.load_model(runner.TASKS.get("classification"), str(tmp_path / "export"),
                                     toy_data())
  assert loaded.config == model.config
  _assert_trees_equal(params, state.params)
  with pytest.raises(InputError, match=r"Dense_0/bias: saved \(16,\) vs model \(8,\)"):
    load_export_params(str(tmp_path / "export"), mlp((8, 16)), example)
  with pytest.raises(MissingInput, match="no model.json"):
    read_export_meta(str(tmp_path))


def _phase(workdir, step_fn_wrapper=None, steps=24):
  """One training phase of a small MLP through the runner; ``step_fn_wrapper`` wraps the
  jitted step (to stop it or to watch it)."""
  config = toy_config(**{"student.steps": steps, "batch_size": 16})
  run = runner.start(config, str(workdir), toy_data())
  model = mlp((16,))
  params = model.init(jax.random.PRNGKey(0), run.data.example)
  if step_fn_wrapper:
    original = train.jit_train_step
    runner.train.jit_train_step = lambda *a, **k: step_fn_wrapper(original(*a, **k))
  try:
    return runner.train_phase(run, "student", model, params, config.student, (("ce", 1.0),))
  finally:
    if step_fn_wrapper:
      runner.train.jit_train_step = original


class _Stop(Exception):
  pass


def test_a_stopped_phase_resumes_from_its_step_and_matches_an_uninterrupted_one(tmp_path):
  straight = _phase(tmp_path / "straight")

  def dies_at_step_13(f):
    def step(state, *rest):
      if int(state.step) == 13:
        raise _Stop()
      return f(state, *rest)
    return step

  with pytest.raises(_Stop):
    _phase(tmp_path / "stopped", dies_at_step_13)
  assert Checkpointer(str(tmp_path / "stopped" / "student" / "checkpoints")).latest_step() == 10

  resumed_from = []

  def records_start(f):
    def step(state, *rest):
      resumed_from.append(int(state.step))
      return f(state, *rest)
    return step

  resumed = _phase(tmp_path / "stopped", records_start)
  assert resumed_from[0] == 10 and len(resumed_from) == 14   # steps 10..23, nothing redone
  _assert_trees_equal(resumed, straight)
