"""A model architecture's config: a frozen dataclass that is JSON-friendly (``dtype`` a
string), so a model's config can be saved beside its weights and read back."""
import dataclasses
from typing import Any, Mapping

from distill_jax.errors import InputError


@dataclasses.dataclass(frozen=True)
class ArchConfig:
  """Base: ``to_dict``, ``from_dict`` (an unknown field is an error listing the known ones)
  and ``replace``."""

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
      raise InputError(f"{cls.__name__} has no field(s) {unknown}; its fields are "
                       f"{sorted(names)}")
    return cls(**d)

  def replace(self, **changes):
    return dataclasses.replace(self, **changes)
