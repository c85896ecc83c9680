"""The design's promises: layers import only downwards, one config schema for every task, one
error policy for every command."""
import ast
import glob
import os
import subprocess
import sys

import ml_collections
import pytest

from distill_jax.config import defaults
from distill_jax.config import load
from tests.helpers import ROOT

# Lower numbers are lower layers; a module may import its own layer and the ones below.
LAYERS = {
    0: ("errors", "registry", "paths", "files", "config", "__init__"),
    1: ("data", "models", "losses", "partition", "sharding", "distributed", "text",
        "text.sts", "text.tokenize"),
    2: ("features", "recombine", "checkpoint", "teacher_cache", "text.weights", "text.minilm",
        "text.hf_llama", "text.generate", "plots"),
    3: ("train", "inference", "loop"),
    4: ("tasks",),
    5: ("runner", "choose", "plans", "manifest", "evaluation_cache", "blockwise"),
    6: ("checks",),
    7: ("main", "search", "sweep", "evaluate", "report", "cli", "blockwise.model_stitching"),
}


def _layer(module: str) -> int:
  """The layer of ``distill_jax.a.b`` (its longest listed prefix)."""
  parts = module.split(".")[1:] or ["__init__"]
  for n in range(len(parts), 0, -1):
    for layer, names in LAYERS.items():
      if ".".join(parts[:n]) in names:
        return layer
  raise AssertionError(f"{module} is in no layer of test_design.LAYERS")


def _imports(path: str) -> list[str]:
  found = []
  for node in ast.walk(ast.parse(open(path).read())):
    if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("distill_jax"):
      found += [f"{node.module}.{a.name}" for a in node.names]   # a name or a submodule
    elif isinstance(node, ast.Import):
      found += [a.name for a in node.names if a.name.startswith("distill_jax")]
  return found


def test_no_module_imports_one_above_it():
  wrong = []
  for path in glob.glob(os.path.join(ROOT, "distill_jax", "**", "*.py"), recursive=True):
    module = "distill_jax." + os.path.relpath(path, os.path.join(ROOT, "distill_jax"))[:-3] \
        .replace(os.sep, ".").replace(".__init__", "")
    for imported in _imports(path):
      if _layer(imported) > _layer(module):
        wrong.append(f"{module} (layer {_layer(module)}) imports {imported} "
                     f"(layer {_layer(imported)})")
  assert not wrong, "\n".join(wrong)


def _flat(config, prefix=""):
  """{dotted key: value} down to model configs and plan tuples, which are values."""
  out = {}
  for k, v in config.items():
    if isinstance(v, ml_collections.ConfigDict) and k != "model":
      out.update(_flat(v, f"{prefix}{k}."))
    else:
      out[prefix + k] = v
  return out


CONFIGS = [("digits_mlp10_to3.py", None), ("digits_search.py", "smoke"),
           ("digits_strategies.py", "500"), ("mnist1d.py", "gru,cosine"),
           ("mnist1d.py", "mlp,stagewise,hint"), ("minilm_l6_to_l3.py", None)]


@pytest.mark.parametrize("name,arg", CONFIGS)
def test_every_config_has_the_schemas_keys_with_the_schemas_types(name, arg):
  schema = _flat(defaults())
  config = _flat(load(os.path.join(ROOT, "configs", name), arg))
  assert set(config) == set(schema), set(config) ^ set(schema)
  for key, value in config.items():
    kind = type(schema[key])
    if kind is float:
      kind = (int, float)
    assert isinstance(value, kind), (key, value, schema[key])


def test_the_two_tasks_read_the_same_keys_the_same_way():
  text = load(os.path.join(ROOT, "configs", "minilm_l6_to_l3.py"))
  digits = load(os.path.join(ROOT, "configs", "digits_mlp10_to3.py"))
  for config in (text, digits):       # strings, both: "" is the online teacher
    assert isinstance(config.distill.cache, str) and isinstance(config.teacher.load, str)
    assert isinstance(config.teacher.model, ml_collections.ConfigDict)   # {name, fields}
    assert all(len(t) == 3 for t in config.distill.terms)               # (term, weight, options)


def _command(code: str):
  return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                        timeout=120)


def test_bad_input_is_one_line_and_a_bug_keeps_its_traceback():
  user = _command("from distill_jax import cli\nfrom distill_jax.errors import InputError\n"
                  "def job(): raise InputError('data.path: no such file')\n"
                  "cli.run(job, config=False)")
  assert user.returncode == 2 and user.stderr.strip() == "FATAL: data.path: no such file"
  bug = _command("from distill_jax import cli\n"
                 "def job(): raise TypeError('unsupported operand')\n"
                 "cli.run(job, config=False)")
  assert bug.returncode == 1
  assert "Traceback" in bug.stderr and "TypeError: unsupported operand" in bug.stderr
  assert "FATAL" not in bug.stderr
