"""Models, registered by name; ``build(model_config, num_classes)`` makes one from a config."""
from distill_jax.models.cnn import CNN
from distill_jax.models.gru import GRU
from distill_jax.models.mlp import MLP
from distill_jax.registry import Registry

MODELS: Registry = Registry("model")
MODELS.register("mlp")(MLP)
MODELS.register("cnn")(CNN)
MODELS.register("gru")(GRU)


def build(model_config, num_classes: int):
  """Instantiate ``model_config.name`` with the config's other keys as constructor arguments."""
  kwargs = {k: (tuple(v) if isinstance(v, (list, tuple)) else v)
            for k, v in model_config.items() if k != "name"}
  cls = MODELS.get(model_config.name)
  fields = [f for f in cls.__dataclass_fields__ if f not in ("parent", "name", "num_classes")]
  unknown = sorted(set(kwargs) - set(fields))
  if unknown:
    raise ValueError(f"model {model_config.name!r} has no field(s) {unknown}; its fields are "
                     f"{fields}")
  return cls(num_classes=num_classes, **kwargs)


__all__ = ["MLP", "CNN", "GRU", "MODELS", "build"]
