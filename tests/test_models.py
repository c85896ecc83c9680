"""Models from configs: depth, widths and indexed layer names."""
import jax
import ml_collections
import numpy as np

from distill_jax import models, train
from distill_jax.paths import count_params, flatten


def _build(**kw):
  return models.build(ml_collections.ConfigDict(kw), num_classes=10)


def test_mlp_depth_and_widths_come_from_the_config():
  model = _build(name="mlp", hidden=(7, 5))
  params = train.init_params(model, (8, 8), jax.random.PRNGKey(0))
  shapes = {k: v.shape for k, v in flatten(params).items()}
  assert shapes == {"Dense_0/kernel": (64, 7), "Dense_0/bias": (7,),
                    "Dense_1/kernel": (7, 5), "Dense_1/bias": (5,),
                    "Dense_2/kernel": (5, 10), "Dense_2/bias": (10,)}
  out = model.apply({"params": params}, np.zeros((3, 8, 8), np.float32))
  assert out.shape == (3, 10)


def test_cnn_layers_are_named_by_index_and_output_logits():
  model = _build(name="cnn", channels=(4, 8), hidden=(16,))
  params = train.init_params(model, (8, 8), jax.random.PRNGKey(0))
  assert list(params) == ["Conv_0", "Conv_1", "Dense_0", "Dense_1"]
  assert params["Conv_0"]["kernel"].shape == (3, 3, 1, 4)
  # 8x8 -> pool 4x4 -> pool 2x2 with 8 channels = 32 features into Dense_0
  assert params["Dense_0"]["kernel"].shape == (32, 16)
  assert count_params(params) == (9 * 4 + 4) + (9 * 4 * 8 + 8) + (32 * 16 + 16) + (16 * 10 + 10)
  assert model.apply({"params": params}, np.zeros((2, 8, 8), np.float32)).shape == (2, 10)
