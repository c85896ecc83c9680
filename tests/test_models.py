"""Models from configs: depth, widths and indexed layer names."""
import jax
import numpy as np

from distill_jax.paths import count_params, flatten
from tests.helpers import build, init_params


def _build(**kw):
  return build(**kw)


def test_mlp_depth_and_widths_come_from_the_config():
  model = _build(name="mlp", hidden=(7, 5))
  params = init_params(model, (8, 8), jax.random.PRNGKey(0))
  shapes = {k: v.shape for k, v in flatten(params).items()}
  assert shapes == {"Dense_0/kernel": (64, 7), "Dense_0/bias": (7,),
                    "Dense_1/kernel": (7, 5), "Dense_1/bias": (5,),
                    "Dense_2/kernel": (5, 10), "Dense_2/bias": (10,)}
  out = model.apply(params, {"x": np.zeros((3, 8, 8), np.float32)})[0]["logits"]
  assert out.shape == (3, 10)


def test_cnn_layers_are_named_by_index_and_output_logits():
  model = _build(name="cnn", channels=(4, 8), hidden=(16,))
  params = init_params(model, (8, 8), jax.random.PRNGKey(0))
  assert list(params) == ["Conv_0", "Conv_1", "Dense_0", "Dense_1"]
  assert params["Conv_0"]["kernel"].shape == (3, 3, 1, 4)
  # 8x8 -> pool 4x4 -> pool 2x2 with 8 channels = 32 features into Dense_0
  assert params["Dense_0"]["kernel"].shape == (32, 16)
  assert count_params(params) == (9 * 4 + 4) + (9 * 4 * 8 + 8) + (32 * 16 + 16) + (16 * 10 + 10)
  assert model.apply(params, {"x": np.zeros((2, 8, 8), np.float32)})[0]["logits"].shape == (2, 10)


def test_cnn_with_a_1d_kernel_reads_sequences():
  model = _build(name="cnn", channels=(4, 6), hidden=(8,), kernel_size=(5,))
  params = init_params(model, (40,), jax.random.PRNGKey(0))
  assert params["Conv_0"]["kernel"].shape == (5, 1, 4)
  assert params["Dense_0"]["kernel"].shape == (10 * 6, 8)     # 40 -> pool 20 -> pool 10
  assert model.apply(params, {"x": np.zeros((2, 40), np.float32)})[0]["logits"].shape == (2, 10)


def test_gru_reads_every_step_into_the_head():
  model = _build(name="gru", units=3, bidirectional=True)
  params = init_params(model, (40,), jax.random.PRNGKey(0))
  shapes = {k: v.shape for k, v in flatten(params).items()}
  assert shapes["GRU_0/forward_rnn/cell/ir/kernel"] == (1, 3)
  assert shapes["GRU_0/backward_rnn/cell/hn/kernel"] == (3, 3)
  assert shapes["Dense_0/kernel"] == (40 * 2 * 3, 10)
  assert model.apply(params, {"x": np.zeros((2, 40), np.float32)})[0]["logits"].shape == (2, 10)
