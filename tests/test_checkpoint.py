"""Orbax round trips and exact resumption of a stopped run."""
import jax
import numpy as np
import pytest

from distill_jax import data as data_lib
from distill_jax import sharding, train
from distill_jax.checkpoint import Checkpointer, restore_params
from distill_jax.data.dataset import Dataset
from distill_jax.loop import fit
from tests.helpers import fixed_batch, mlp, state_for


def _assert_trees_equal(a, b):
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, a),
               jax.tree.map(np.asarray, b))


def _trained_state():
  model = mlp((16, 16))
  state = state_for(model)
  step = jax.jit(train.make_train_step(model.apply))
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
  _assert_trees_equal(restore_params(str(tmp_path / "ckpt"), template.params), state.params)
  ckpt.close()


def test_restore_params_from_missing_directory_names_it(tmp_path):
  with pytest.raises(FileNotFoundError, match="nope"):
    restore_params(str(tmp_path / "nope"), {})


class _Stop(Exception):
  pass


def _fit(workdir, step_fn, num_steps=24):
  rng = np.random.default_rng(0)
  ds = Dataset("toy", rng.normal(size=(80, 64)).astype(np.float32),
               rng.integers(0, 10, 80).astype(np.int32),
               rng.normal(size=(8, 64)).astype(np.float32), np.arange(8, dtype=np.int32), 10)
  model = mlp((16,))
  state = state_for(model, steps=num_steps)
  mesh = sharding.make_mesh()
  shardings = sharding.tree_shardings(state, sharding.REPLICATED, mesh)
  jitted = train.jit_train_step(train.make_train_step(model.apply), mesh, shardings)
  ckpt = Checkpointer(str(workdir))
  try:
    return fit(phase="t", state=state, step_fn=lambda *a: step_fn(jitted, *a),
               batch_fn=lambda step: data_lib.train_batch(ds, 16, 7, step),
               batch_size=16, num_steps=num_steps, mesh=mesh, state_shardings=shardings,
               checkpointer=ckpt, log_every=2, checkpoint_every=5)
  finally:
    ckpt.close()


def test_a_stopped_run_resumes_from_its_step_and_matches_an_uninterrupted_one(tmp_path):
  straight = _fit(tmp_path / "straight", lambda f, *a: f(*a))

  calls = []

  def dies_at_step_13(f, state, *rest):
    calls.append(int(state.step))
    if int(state.step) == 13:
      raise _Stop()
    return f(state, *rest)

  with pytest.raises(_Stop):
    _fit(tmp_path / "stopped", dies_at_step_13)
  assert Checkpointer(str(tmp_path / "stopped")).latest_step() == 10

  resumed_from = []

  def records_start(f, state, *rest):
    resumed_from.append(int(state.step))
    return f(state, *rest)

  resumed = _fit(tmp_path / "stopped", records_start)
  assert resumed_from[0] == 10 and len(resumed_from) == 14   # steps 10..23, nothing redone
  _assert_trees_equal(resumed.params, straight.params)
