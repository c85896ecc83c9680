"""Several teachers as one model (big_vision's ensemble teachers): each member runs on the
batch, the outputs are their combination (``combine``: ``"logits"``, the mean of the members'
logits; ``"probs"``, the log of the mean of their probabilities) and each member's own logits
as ``logits@<i>``, which a loss term reads with its ``teacher=<i>`` option (a teacher per term).

Its parameters are ``{"member_<i>": member params}``; features are named
``member_<i>/<the member's feature path>``. The student is initialised from member 0.
"""
import dataclasses
import math
from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp

from distill_jax.errors import InputError

COMBINES = ("logits", "probs")


def member_key(i: int) -> str:
  return f"member_{i}"


@dataclasses.dataclass(frozen=True, eq=False)
class Ensemble:
  """Members (built models of one task's outputs) and how their logits combine."""
  members: tuple
  combine: str = "logits"
  name: str = "ensemble"

  def __post_init__(self):
    if len(self.members) < 2:
      raise InputError(f"an ensemble needs at least 2 members, got {len(self.members)}")
    if self.combine not in COMBINES:
      raise InputError(f"teacher.combine={self.combine!r}: use one of {list(COMBINES)}")

  @property
  def config(self) -> dict:
    return {"name": self.name, "combine": self.combine,
            "members": [m.config for m in self.members]}

  def init(self, rng: jax.Array, batch: Mapping[str, Any]) -> dict:
    return {member_key(i): m.init(jax.random.fold_in(rng, i), batch)
            for i, m in enumerate(self.members)}

  def apply(self, params: Any, batch: Mapping[str, Any], train: bool = False,
            rngs: Optional[dict] = None, capture: bool = False) -> tuple[dict, dict]:
    """The combined outputs (member 0's other outputs, e.g. a token mask, kept) and features."""
    outs = [m.apply(params[member_key(i)], batch, train=train, rngs=rngs, capture=capture)
            for i, m in enumerate(self.members)]
    shapes = [tuple(o.get("logits", jnp.zeros(0)).shape) for o, _ in outs]
    if any("logits" not in o for o, _ in outs) or len(set(shapes)) > 1:
      raise InputError(f"ensemble members give logits of shapes {shapes}: members must give "
                       "logits of one shape (the same classes)")
    logits = jnp.stack([o["logits"].astype(jnp.float32) for o, _ in outs])
    if self.combine == "logits":
      combined = logits.mean(0)
    else:   # log of the mean probability, computed in log space
      combined = jax.nn.logsumexp(jax.nn.log_softmax(logits, -1), 0) - math.log(len(outs))
    out = {**outs[0][0], "logits": combined,
           **{f"logits@{i}": logits[i] for i in range(len(outs))}}
    features = {f"{member_key(i)}/{k}": v for i, (_, f) in enumerate(outs) for k, v in f.items()}
    return out, features


def first_member(model: Any, params: Any) -> tuple[Any, Any]:
  """What a student is initialised from: member 0 of an ensemble, else the model itself."""
  if isinstance(model, Ensemble):
    return model.members[0], None if params is None else params[member_key(0)]
  return model, params
