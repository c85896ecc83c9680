"""The pure train step: it learns, and data parallelism does not change its numbers."""
import textwrap

import jax
import numpy as np
import pytest

from distill_jax import train
from tests.helpers import fixed_batch, mlp, run_python, state_for


def _kd_step(teacher, student):
  return jax.jit(train.make_train_step(student.apply, teacher.apply, temperature=4.0, alpha=0.7))


def test_kd_train_step_lowers_loss_on_a_fixed_batch():
  teacher, student = mlp((32, 32, 32)), mlp((16,))
  teacher_params = state_for(teacher, seed=5).params
  state, batch = state_for(student), fixed_batch()
  step = _kd_step(teacher, student)
  losses = []
  for _ in range(30):
    state, metrics = step(state, batch, teacher_params)
    losses.append(float(metrics["loss"]))
  assert losses[-1] < 0.5 * losses[0], losses
  assert int(state.step) == 30


def test_teacher_is_not_updated_and_only_student_changes():
  teacher, student = mlp((32,)), mlp((16,))
  teacher_params = state_for(teacher, seed=5).params
  before = jax.tree.map(np.array, teacher_params)
  state = state_for(student)
  student_before = jax.tree.map(np.array, state.params)
  new_state, _ = _kd_step(teacher, student)(state, fixed_batch(), teacher_params)
  jax.tree.map(np.testing.assert_array_equal, before, jax.tree.map(np.array, teacher_params))
  changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), student_before,
                         jax.tree.map(np.array, new_state.params))
  assert all(jax.tree_util.tree_leaves(changed))


def test_mixup_with_lambda_one_is_identity():
  x = np.arange(12, dtype=np.float32).reshape(4, 3)
  mixed, lam = train.mixup(x, jax.random.PRNGKey(0), 1.0)
  np.testing.assert_allclose(mixed, lam * x + (1 - lam) * np.roll(x, 1, 0), rtol=1e-6)
  assert 0.0 <= float(lam) <= 1.0


def test_one_and_eight_devices_give_the_same_steps():
  code = textwrap.dedent("""
      import jax, numpy as np
      from distill_jax import train
      from tests.helpers import fixed_batch, mlp, state_for
      assert jax.device_count() == 8, jax.devices()
      teacher, student = mlp((32, 32)), mlp((16,))
      tparams = state_for(teacher, seed=3).params
      step = train.make_train_step(student.apply, teacher.apply, temperature=2.0, alpha=0.5)
      results = []
      for devices in (jax.devices()[:1], jax.devices()):
        mesh = train.make_mesh(devices)
        state = train.replicate(state_for(student), mesh, copy=True)
        jstep = train.jit_train_step(step, mesh, state)
        losses = []
        for i in range(4):
          batch = train.shard_batch(fixed_batch(seed=i), mesh)
          state, metrics = jstep(state, batch, train.replicate(tparams, mesh))
          losses.append(float(metrics["loss"]))   # waits every step: see PITFALLS
        shards = len(batch["x"].addressable_shards)
        results.append((losses, jax.tree.map(np.asarray, state.params), shards))
      (l1, p1, s1), (l8, p8, s8) = results
      assert (s1, s8) == (1, 8), (s1, s8)
      np.testing.assert_allclose(l1, l8, rtol=1e-5)
      jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), p1, p8)
      print("OK", l1)
  """)
  out = run_python(code, {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"})
  assert out.returncode == 0, out.stderr[-3000:]
  assert "OK" in out.stdout


def test_batch_not_divisible_by_devices_is_a_clear_error():
  three_device_mesh = type("Mesh", (), {"shape": {"data": 3}})()  # the check reads only .shape
  with pytest.raises(ValueError, match=r"batch\['x'\] has 5 examples, not divisible by the 3"):
    train.shard_batch({"x": np.zeros((5, 2))}, three_device_mesh)
