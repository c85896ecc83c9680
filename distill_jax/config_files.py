"""Config files are Python files, not a package: load one by its path.

Used by the sweep (one file, several arguments) and by config files built on another one
(``sibling(__file__, "digits_mlp10_to3.py")``). Importing this module imports nothing heavy,
so config files can use it.
"""
import importlib.util
import os
from typing import Optional

import ml_collections


def load(path: str, arg: Optional[str] = None) -> ml_collections.ConfigDict:
  """``get_config(arg)`` of the config file at ``path``."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"config file {path!r} does not exist")
  spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def sibling(config_file: str, name: str, arg: Optional[str] = None) -> ml_collections.ConfigDict:
  """``get_config(arg)`` of config file ``name`` in the same folder as ``config_file``."""
  return load(os.path.join(os.path.dirname(os.path.abspath(config_file)), name), arg)
