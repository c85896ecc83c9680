"""Models, registered by name; ``build(model_config, num_classes)`` makes one from a config."""
from distill_jax.models.cnn import CNN
from distill_jax.models.mlp import MLP
from distill_jax.registry import Registry

MODELS: Registry = Registry("model")
MODELS.register("mlp")(MLP)
MODELS.register("cnn")(CNN)


def build(model_config, num_classes: int):
  """Instantiate ``model_config.name`` with the config's other keys as constructor arguments."""
  kwargs = {k: (tuple(v) if isinstance(v, (list, tuple)) else v)
            for k, v in model_config.items() if k != "name"}
  return MODELS.get(model_config.name)(num_classes=num_classes, **kwargs)


__all__ = ["MLP", "CNN", "MODELS", "build"]
