"""The model contract: registered, initialised from an example batch, applied as
``model.apply(params, batch, train=...)`` to named outputs (``logits``; ``pooled``,
``token_mask``); intermediate features captured the same way for all (``capture=True``).
"""
import dataclasses
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
from flax.traverse_util import flatten_dict

from distill_jax.errors import InputError
from distill_jax.registry import Registry


@dataclasses.dataclass(frozen=True)
class Family:
  """How to build and call one kind of module."""
  make: Callable[[dict, Mapping[str, Any]], Any]      # (fields, data info) -> Flax module
  inputs: Sequence[str] = ("x",)                      # batch keys, in call order
  outputs: Callable[[Any, dict], dict] = lambda out, batch: {"logits": out}
  # The module's config, JSON-able (for the export): a linen module's dataclass fields.
  fields: Callable[[Any], dict] = lambda module: {
      f.name: (list(v) if isinstance(v, tuple) else v) for f in dataclasses.fields(module)
      if f.name not in ("parent", "name", "num_classes")
      and not callable(v := getattr(module, f.name))}


MODELS: Registry[Family] = Registry("model")


@dataclasses.dataclass(frozen=True, eq=False)
class Model:
  """A built model: its registry name, its full config (JSON-able) and its module."""
  name: str
  config: dict
  module: Any
  family: Family

  def init(self, rng: jax.Array, batch: Mapping[str, Any]) -> Any:
    return self.module.init(rng, *self._args(batch))["params"]

  def apply(self, params: Any, batch: Mapping[str, Any], train: bool = False,
            rngs: Optional[dict] = None, capture: bool = False) -> tuple[dict, dict]:
    """``(outputs, features)``; features (``{path: array}``) only when ``capture``."""
    kwargs = dict(train=train, rngs=rngs or {})
    if capture:
      out, state = self.module.apply({"params": params}, *self._args(batch),
                                     capture_intermediates=True, mutable=["intermediates"],
                                     **kwargs)
      return self.family.outputs(out, batch), feature_dict(state.get("intermediates", {}))
    out = self.module.apply({"params": params}, *self._args(batch), **kwargs)
    return self.family.outputs(out, batch), {}

  def _args(self, batch: Mapping[str, Any]) -> list:
    missing = [k for k in self.family.inputs if k not in batch]
    if missing:
      raise InputError(f"model {self.name!r} reads batch keys {list(self.family.inputs)}; the "
                       f"batch lacks {missing} (it has {sorted(batch)})")
    return [batch[k] for k in self.family.inputs]


def build(model_config: Mapping[str, Any], info: Mapping[str, Any]) -> Model:
  """The model ``model_config["name"]`` with the config's other keys as its fields; ``info``
  is what the data says (e.g. ``num_classes``)."""
  fields = {k: (tuple(v) if isinstance(v, list) else v) for k, v in dict(model_config).items()
            if k != "name"}
  family = MODELS.get(model_config["name"])
  module = family.make(fields, info)
  return Model(model_config["name"], {"name": model_config["name"], **family.fields(module)},
               module, family)


def linen(cls: type) -> Callable[[dict, Mapping[str, Any]], Any]:
  """``make`` for a linen classifier class: its dataclass fields from the config, its
  ``num_classes`` from the data; an unknown field is an error listing the known ones."""
  known = [f.name for f in dataclasses.fields(cls) if f.name not in ("parent", "name",
                                                                       "num_classes")]

  def make(fields: dict, info: Mapping[str, Any]):
    unknown = sorted(set(fields) - set(known))
    if unknown:
      raise InputError(f"model {cls.__name__} has no field(s) {unknown}; its fields are {known}")
    return cls(num_classes=int(info["num_classes"]), **fields)
  return make


def feature_dict(intermediates: Any) -> dict[str, Any]:
  """Flax's intermediates as ``{path: array}``: the ``__call__`` level and one-element tuples
  dropped, other tuple elements indexed (an RNN's ``(carry, outputs)``: ``.../forward_rnn/1``),
  non-arrays skipped."""
  out = {}

  def add(path, value):
    if isinstance(value, (tuple, list)):
      if len(value) == 1:
        add(path, value[0])
      else:
        for i, v in enumerate(value):
          add(path + (str(i),), v)
    elif hasattr(value, "shape"):
      out["/".join(path)] = value

  for path, value in flatten_dict(intermediates, keep_empty_nodes=False).items():
    add(tuple(p for p in path if p != "__call__"), value)
  out.pop("", None)   # the model's own output is not a feature
  return out


# Registering the built-in families (the modules import nothing from here).
from distill_jax.models import bert as _bert  # noqa: E402
from distill_jax.models import llama as _llama  # noqa: E402
from distill_jax.models.cnn import CNN  # noqa: E402
from distill_jax.models.gnn import GNN  # noqa: E402
from distill_jax.models.gru import GRU  # noqa: E402
from distill_jax.models.mlp import MLP  # noqa: E402
from distill_jax.models.text_cnn import TextCNN  # noqa: E402

MODELS.register("mlp")(Family(linen(MLP)))
MODELS.register("cnn")(Family(linen(CNN)))
MODELS.register("gru")(Family(linen(GRU)))
# Graphs: node features and the edge list of each graph in the batch (docs/graphs.md).
MODELS.register("gnn")(Family(linen(GNN), inputs=("x", "senders", "receivers")))
MODELS.register("bert")(Family(
    make=lambda fields, info: _bert.BertEncoder(_bert.BertConfig.from_dict(fields)),
    inputs=("input_ids", "attention_mask", "token_type_ids"), outputs=_bert.sentence_outputs,
    fields=lambda module: module.config.to_dict()))
# Text classification: the encoder with a head (its own fields: classifier_dropout), a CNN.
MODELS.register("bert_classifier")(Family(
    make=lambda fields, info: _bert.BertClassifier(
        _bert.BertConfig.from_dict({k: v for k, v in fields.items() if k != "classifier_dropout"}),
        num_classes=int(info["num_classes"]),
        classifier_dropout=fields.get("classifier_dropout", 0.1)),
    inputs=("input_ids", "attention_mask", "token_type_ids"), outputs=_bert.classifier_outputs,
    fields=lambda module: {**module.config.to_dict(),
                           "classifier_dropout": module.classifier_dropout}))
MODELS.register("text_cnn")(Family(linen(TextCNN), inputs=("input_ids", "attention_mask"),
                                   outputs=lambda out, batch: {
                                       "logits": out, "token_mask": batch["attention_mask"]}))
# A causal LM: the vocabulary comes from the data's tokenizer unless the config fixes it.
MODELS.register("llama")(Family(
    make=lambda fields, info: _llama.Llama(_llama.LlamaConfig.from_dict(
        {"vocab_size": info["vocab_size"], **fields} if "vocab_size" in info else fields)),
    inputs=("tokens",), outputs=_llama.lm_outputs, fields=lambda module: module.config.to_dict()))

# Stack views (blockwise training, stitching) and the "<family>_stitched"/"_block" models.
from distill_jax.models import stack as _stack  # noqa: E402,F401

__all__ = ["MODELS", "Family", "Model", "build", "linen", "feature_dict", "MLP", "CNN", "GRU",
           "GNN"]
