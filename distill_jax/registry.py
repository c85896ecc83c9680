"""Registries, not if-chains: a config names a function; users add their own with a decorator."""
import logging
from typing import Callable, Generic, TypeVar

from distill_jax.errors import UnknownName

T = TypeVar("T")


class Registry(Generic[T]):
  """A name -> object table whose lookup errors list the known names."""

  def __init__(self, kind: str):
    self.kind = kind
    self._items: dict[str, T] = {}

  def register(self, name: str) -> Callable[[T], T]:
    def add(obj: T) -> T:
      if name in self._items and self._items[name] is not obj:
        # Re-running a notebook cell re-registers the same name: the newest definition wins.
        logging.warning("%s %r re-registered", self.kind, name)
      self._items[name] = obj
      return obj
    return add

  def get(self, name: str) -> T:
    if name not in self._items:
      raise UnknownName(f"unknown {self.kind} {name!r}; known: {sorted(self._items)}")
    return self._items[name]

  def names(self) -> list[str]:
    return sorted(self._items)
