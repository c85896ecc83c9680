"""Loss terms against values derived by hand, and the checks on configured terms."""
import math

import jax.numpy as jnp
import pytest

from distill_jax import losses
from distill_jax.errors import InputError, UnknownName

# teacher logits (1, 0) and student logits (0, 1) at T = 2 give p = softmax(0.5, 0) and
# q = softmax(0, 0.5) = reversed p, so KL(p||q) = (p0 - p1) * log(p0/p1) = tanh(1/4) * 1/2.
T_LOGITS = jnp.array([[1.0, 0.0]])
S_LOGITS = jnp.array([[0.0, 1.0]])
KL_T2 = 0.5 * math.tanh(0.25)
CE_LABEL0 = math.log(1.0 + math.e)   # -log softmax(0, 1)[0]
BATCH = {"y": jnp.array([0])}


def _term(name, student=S_LOGITS, teacher=T_LOGITS, batch=BATCH, **options):
  return float(losses.TERMS.get(name).fn({"logits": student}, {"logits": teacher}, batch,
                                         **options))


def test_kl_divergence_matches_hand_value():
  assert float(losses.kl_divergence(T_LOGITS, S_LOGITS, 2.0)) == pytest.approx(KL_T2, rel=1e-6)


def test_kl_is_zero_for_identical_logits():
  logits = jnp.array([[3.0, -1.0, 0.5]])
  assert float(losses.kl_divergence(logits, logits, 3.0)) == pytest.approx(0.0, abs=1e-7)


def test_ce_term_matches_hand_value():
  assert _term("ce") == pytest.approx(CE_LABEL0, rel=1e-6)


def test_kd_term_is_t_squared_kl():
  assert _term("kd", temperature=2.0) == pytest.approx(4.0 * KL_T2, rel=1e-6)


def test_ce_with_mixup_weights_both_labels():
  # two examples, labels (0, 1); with lambda 0.25 each example's CE against its own label
  # weighs 0.25 and against its neighbour's (rolled) label 0.75.
  s = jnp.array([[0.0, 1.0], [2.0, 0.0]])
  ce = lambda logits, y: math.log(sum(math.exp(v) for v in logits)) - logits[y]
  own = (ce([0.0, 1.0], 0) + ce([2.0, 0.0], 1)) / 2
  rolled = (ce([0.0, 1.0], 1) + ce([2.0, 0.0], 0)) / 2
  got = _term("ce", student=s, batch={"y": jnp.array([0, 1]), "mixup_lambda": 0.25})
  assert got == pytest.approx(0.25 * own + 0.75 * rolled, rel=1e-6)


def test_ce_with_host_mixup_reads_each_rows_partner_label():
  # The host's mixup gives one lambda per row and the partner labels (y_mix): three examples,
  # partners (2, 0, 1) as np.roll gives, lambda 0.7; an unlabelled row (-1) counts for nothing.
  s = jnp.array([[0.0, 1.0, 0.5], [2.0, 0.0, 1.0], [0.3, 0.3, 3.0]])
  ce = lambda logits, y: math.log(sum(math.exp(v) for v in logits)) - logits[y]
  y, y_mix = [0, 1, 2], [2, 0, 1]
  want = sum(0.7 * ce(s[i].tolist(), y[i]) + 0.3 * ce(s[i].tolist(), y_mix[i])
             for i in range(3)) / 3
  batch = {"y": jnp.array(y), "y_mix": jnp.array(y_mix), "mixup_lambda": jnp.full(3, 0.7)}
  assert _term("ce", student=s, batch=batch) == pytest.approx(want, rel=1e-6)
  # row 2 unlabelled: its own term and row 0's partner term (y_mix -1) drop out of each mean
  batch = dict(batch, y=jnp.array([0, 1, -1]), y_mix=jnp.array([-1, 0, 1]))
  want = (0.7 * (ce(s[0].tolist(), 0) + ce(s[1].tolist(), 1)) / 2
          + 0.3 * (ce(s[1].tolist(), 0) + ce(s[2].tolist(), 1)) / 2)
  assert _term("ce", student=s, batch=batch) == pytest.approx(want, rel=1e-6)


def test_hinton_objective_at_alpha_half_equals_written_out_number():
  # 0.5 * T^2 * KL + 0.5 * CE at T = 2, as (("kd", 0.5, {T: 2}), ("ce", 0.5, {}))
  got = 0.5 * _term("kd", temperature=2.0) + 0.5 * _term("ce")
  assert got == pytest.approx(0.9015495, abs=1e-6)


def test_embedding_terms_match_hand_values():
  s, t = {"pooled": jnp.array([[3.0, 4.0]])}, {"pooled": jnp.array([[0.0, 4.0]])}
  assert float(losses.embedding_mse(s, t, {})) == pytest.approx(9.0)
  assert float(losses.embedding_cosine(s, t, {})) == pytest.approx(1 - 4 / 5, rel=1e-6)


def test_hint_with_a_token_mask_ignores_padding_tokens():
  t = jnp.zeros((1, 3, 2))
  s = jnp.array([[[1.0, 1.0], [3.0, 3.0], [100.0, 100.0]]])   # the third token is padding
  assert float(losses.hint(t, s, jnp.array([[1, 1, 0]]))) == pytest.approx((1 + 9) / 2)
  assert float(losses.hint(t, s)) == pytest.approx((1 + 9 + 10000) / 3)


def test_relation_kl_is_zero_for_equal_and_matches_hand_value():
  # one head, two real tokens, one dimension: A = [[1], [0]] -> scores [[1, 0], [0, 0]];
  # B = [[0], [0]] -> uniform rows. KL(softmax(1, 0) || (1/2, 1/2)) for row 0, 0 for row 1.
  a, b = jnp.array([[[1.0], [0.0]]]), jnp.zeros((1, 2, 1))
  mask = jnp.array([[1, 1]])
  assert float(losses.relation(a, a, mask, heads=1)) == pytest.approx(0.0, abs=1e-7)
  p = 1 / (1 + math.exp(-1))
  row0 = p * math.log(2 * p) + (1 - p) * math.log(2 * (1 - p))
  assert float(losses.relation(a, b, mask, heads=1)) == pytest.approx(row0 / 2, rel=1e-5)


def test_bind_checks_names_weights_and_options():
  bound = losses.bind((("kd", 0.9, {"temperature": 4.0}), ("ce", 0.1)), "distill.terms")
  assert [(b.name, b.weight, dict(b.options)) for b in bound] == [
      ("kd", 0.9, {"temperature": 4.0}), ("ce", 0.1, {})]
  with pytest.raises(UnknownName, match=r"unknown loss term 'kdd'; known: \[.*'kd'"):
    losses.bind((("kdd", 1.0, {}),), "distill.terms")
  with pytest.raises(InputError, match=r"distill.terms\[0\]: weight of 'kd' is -1"):
    losses.bind((("kd", -1, {}),), "distill.terms")
  with pytest.raises(InputError, match=r"'kd' option temperature=-1.0 must be > 0"):
    losses.bind((("kd", 1.0, {"temperature": -1.0}),), "distill.terms")
  with pytest.raises(InputError, match=r"term 'kd' has no option\(s\) \['alpha'\]; it takes "
                                       r"\['temperature'\]"):
    losses.bind((("kd", 1.0, {"alpha": 0.5}),), "distill.terms")
  with pytest.raises(InputError, match="feature term 'hint' needs pairs="):
    losses.bind((("hint", 1.0, {}),), "distill.terms")
