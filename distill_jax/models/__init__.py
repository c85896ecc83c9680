"""The model contract: registered, initialised from an example batch, applied as
``model.apply(params, batch, train=...)`` to named outputs (``logits``; ``pooled``,
``token_mask``); intermediate features captured the same way for all (``capture=True``).

A family with mutable state (batch-norm statistics: ``Family.state = ("batch_stats",)``) keeps
it in the parameter tree at its module's path (``.../bn_1/{scale, bias, mean, var}``), so
partition rules, layer selection and checkpoints carry it with its block; ``apply(train=True)``
returns the updated statistics as ``outputs["state_updates"]`` (``{path: array}``) and the train
step writes them back.
"""
import dataclasses
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
from flax.traverse_util import flatten_dict, unflatten_dict

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
  # Mutable collections kept in the params tree (e.g. ("batch_stats",)); () for stateless ones.
  state: Sequence[str] = ()


STATE_UPDATES = "state_updates"     # the output key of the updated state in train mode

MODELS: Registry[Family] = Registry("model")


@dataclasses.dataclass(frozen=True, eq=False)
class Model:
  """A built model: its registry name, its full config (JSON-able) and its module."""
  name: str
  config: dict
  module: Any
  family: Family

  def init(self, rng: jax.Array, batch: Mapping[str, Any]) -> Any:
    """Fresh params; a family's state collections merged in at their modules' paths."""
    variables = self.module.init(rng, *self._args(batch))
    if not self.family.state:
      return variables["params"]
    flat, owner = {}, {}
    for collection in ("params", *self.family.state):
      for path, value in flatten_dict(variables.get(collection, {}), sep="/").items():
        if path in flat:
          raise InputError(f"model {self.name!r}: {path!r} is in both collections "
                           f"{owner[path]!r} and {collection!r}; one tree cannot hold both")
        flat[path], owner[path] = value, collection
    self.__dict__["_state_cache"] = {p: c for p, c in owner.items() if c != "params"}
    return unflatten_dict(flat, sep="/")

  def apply(self, params: Any, batch: Mapping[str, Any], train: bool = False,
            rngs: Optional[dict] = None, capture: bool = False) -> tuple[dict, dict]:
    """``(outputs, features)``; features (``{path: array}``) only when ``capture``. With
    state and ``train``: ``outputs["state_updates"]``, the updated state as ``{path: array}``."""
    args = self._args(batch)
    kwargs = dict(train=train, rngs=rngs or {})
    variables = self._variables(params, args, train) if self.family.state else {"params": params}
    # Train-mode state (batch statistics) is updated, and read back from the returned
    # collections; evaluation reads it as it is.
    mutable = [*(self.family.state if train else ()), *(["intermediates"] if capture else [])]
    if not mutable:
      return self.family.outputs(self.module.apply(variables, *args, **kwargs), batch), {}
    out, updated = self.module.apply(variables, *args, capture_intermediates=capture,
                                     mutable=mutable, **kwargs)
    outputs = self.family.outputs(out, batch)
    if train and self.family.state:
      outputs[STATE_UPDATES] = {path: value for c in self.family.state
                                for path, value in flatten_dict(updated.get(c, {}),
                                                                sep="/").items()}
    return outputs, feature_dict(updated.get("intermediates", {})) if capture else {}

  def _variables(self, params: Any, args: list, train: bool) -> dict:
    """``params`` split back into Flax's collections by the model's state paths."""
    owner = self._state_paths(args)
    flat = flatten_dict(params, sep="/")
    missing = sorted(set(owner) - set(flat))
    if missing:
      raise InputError(f"model {self.name!r}: the params lack state leaves {missing[:4]}"
                       f"{' ...' if len(missing) > 4 else ''} (params from a model without "
                       f"{list(self.family.state)}?)")
    split: dict = {c: {} for c in ("params", *self.family.state)}
    for path, value in flat.items():
      collection = owner.get(path, "params")
      # The statistics are not trained: no gradient flows into them.
      split[collection][path] = (jax.lax.stop_gradient(value)
                                 if train and collection != "params" else value)
    return {c: unflatten_dict(v, sep="/") for c, v in split.items()}

  def _state_paths(self, args: list) -> dict[str, str]:
    """``{path: collection}`` of the state leaves, from the module's abstract init (once per
    model: params may come from a checkpoint, never through :meth:`init`)."""
    if "_state_cache" not in self.__dict__:
      shapes = jax.eval_shape(self.module.init, jax.random.PRNGKey(0), *[
          jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)) for a in args])
      self.__dict__["_state_cache"] = {path: c for c in self.family.state
                                       for path in flatten_dict(shapes.get(c, {}), sep="/")}
    return self.__dict__["_state_cache"]

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


def linen(cls: type, presets: Optional[Mapping[str, dict]] = None
          ) -> Callable[[dict, Mapping[str, Any]], Any]:
  """``make`` for a linen classifier class: its dataclass fields from the config, its
  ``num_classes`` from the data; an unknown field is an error listing the known ones.
  ``presets``: named field sets; a ``preset`` field expands to one, the config's other
  fields overriding it (the built model's config holds the expanded fields)."""
  known = [f.name for f in dataclasses.fields(cls) if f.name not in ("parent", "name",
                                                                       "num_classes")]

  def make(fields: dict, info: Mapping[str, Any]):
    if presets is not None and "preset" in fields:
      fields = dict(fields)
      name = fields.pop("preset")
      if name not in presets:
        raise InputError(f"model {cls.__name__}: preset {name!r} is not one of "
                         f"{sorted(presets)}")
      fields = {**presets[name], **fields}
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
from distill_jax.models.resnet import RESNETS, ResNet  # noqa: E402
from distill_jax.models.text_cnn import TextCNN  # noqa: E402
from distill_jax.models.vit import VITS, ViT  # noqa: E402

MODELS.register("mlp")(Family(linen(MLP)))
MODELS.register("cnn")(Family(linen(CNN)))
MODELS.register("gru")(Family(linen(GRU)))
# Images: ResNets (batch-norm statistics kept with their blocks) and ViTs; {"preset": "resnet20"}.
MODELS.register("resnet")(Family(linen(ResNet, RESNETS), state=("batch_stats",)))
MODELS.register("vit")(Family(linen(ViT, VITS)))
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
           "GNN", "ResNet", "ViT", "STATE_UPDATES"]
