"""The Hinton KD loss against values derived by hand."""
import math

import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax import losses

# teacher logits (1, 0) and student logits (0, 1) at T = 2 give p = softmax(0.5, 0) and
# q = softmax(0, 0.5) = reversed p, so KL(p||q) = (p0 - p1) * log(p0/p1) = tanh(1/4) * 1/2.
T_LOGITS = jnp.array([[1.0, 0.0]])
S_LOGITS = jnp.array([[0.0, 1.0]])
KL_T2 = 0.5 * math.tanh(0.25)
CE_LABEL0 = math.log(1.0 + math.e)   # -log softmax(0, 1)[0]


def test_kl_divergence_matches_hand_value():
  assert float(losses.kl_divergence(T_LOGITS, S_LOGITS, 2.0)) == pytest.approx(KL_T2, rel=1e-6)


def test_kl_is_zero_for_identical_logits():
  logits = jnp.array([[3.0, -1.0, 0.5]])
  assert float(losses.kl_divergence(logits, logits, 3.0)) == pytest.approx(0.0, abs=1e-7)


def test_cross_entropy_matches_hand_value():
  assert float(losses.cross_entropy(S_LOGITS, jnp.array([0]))) == pytest.approx(CE_LABEL0, 1e-6)


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_hinton_kd_weights_t_squared_kl_and_ce(alpha):
  got = float(losses.hinton_kd(S_LOGITS, T_LOGITS, jnp.array([0]), temperature=2.0, alpha=alpha))
  want = alpha * 4.0 * KL_T2 + (1 - alpha) * CE_LABEL0   # T^2 = 4
  assert got == pytest.approx(want, rel=1e-6)


def test_hinton_kd_at_alpha_half_equals_written_out_number():
  got = float(losses.hinton_kd(S_LOGITS, T_LOGITS, jnp.array([0]), temperature=2.0, alpha=0.5))
  assert got == pytest.approx(0.9015495, abs=1e-6)


def test_mask_drops_padded_examples():
  s = jnp.concatenate([S_LOGITS, jnp.array([[50.0, -50.0]])])
  t = jnp.concatenate([T_LOGITS, jnp.array([[-50.0, 50.0]])])
  y = jnp.array([0, 1])
  got = losses.hinton_kd(s, t, y, 2.0, 0.5, mask=jnp.array([1.0, 0.0]))
  np.testing.assert_allclose(got, 0.5 * 4 * KL_T2 + 0.5 * CE_LABEL0, rtol=1e-6)
