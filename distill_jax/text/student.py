"""A saved text student: Orbax params plus the JSON of its :class:`BertConfig`.

Layout of a student directory::

  DIR/bert_config.json    BertConfig.to_dict()
  DIR/params/             Orbax StandardCheckpointer tree of the encoder's params

The restore target is built from the JSON config (shapes and dtypes via ``jax.eval_shape``),
as Orbax needs (see PITFALLS: restoring without a target loses structure), and a checkpoint
whose shapes do not fit the config is an error naming the parameters.
:func:`load_text_model` also opens HF safetensors folders and the packaged teacher.
"""
import json
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from distill_jax.models.bert import BertConfig, init_params
from distill_jax.paths import flatten
from distill_jax.text.weights import expected_shapes

CONFIG_FILE = "bert_config.json"
PARAMS_DIR = "params"


def save_student(directory: str, params: Any, config: BertConfig) -> str:
  """Write ``params`` and ``config`` into ``directory`` (replacing a previous student there)."""
  directory = os.path.abspath(directory)
  _check_fits(params, config, f"params given to save_student({directory!r})")
  os.makedirs(directory, exist_ok=True)
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(os.path.join(directory, PARAMS_DIR), params, force=True)
  checkpointer.wait_until_finished()
  checkpointer.close()
  with open(os.path.join(directory, CONFIG_FILE), "w") as f:
    json.dump(config.to_dict(), f, indent=2, sort_keys=True)
  return directory


def load_student_config(directory: str) -> BertConfig:
  path = os.path.join(directory, CONFIG_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{directory!r} is not a saved student: no {CONFIG_FILE}")
  with open(path) as f:
    return BertConfig.from_dict(json.load(f))


def load_student(directory: str) -> tuple[Any, BertConfig]:
  """(params, config) of a directory written by :func:`save_student`."""
  directory = os.path.abspath(directory)
  config = load_student_config(directory)
  abstract = jax.eval_shape(lambda: init_params(config, jax.random.PRNGKey(0)))
  checkpointer = ocp.StandardCheckpointer()
  where = os.path.join(directory, PARAMS_DIR)
  if not os.path.isdir(where):
    raise FileNotFoundError(f"saved student {directory!r} has no {PARAMS_DIR}/ checkpoint")
  _check_saved_shapes(checkpointer, where, abstract)
  params = checkpointer.restore(where, abstract)
  checkpointer.close()
  return params, config


def _check_fits(params: Any, config: BertConfig, what: str) -> None:
  want = expected_shapes(config)
  got = {k: tuple(np.shape(v)) for k, v in flatten(params).items()}
  _raise_on_difference(got, want, what)


def _check_saved_shapes(checkpointer: ocp.StandardCheckpointer, where: str, abstract: Any) -> None:
  """Name the parameters whose saved shapes differ from the JSON config's, before Orbax
  fails with a tensorstore message."""
  try:
    meta = checkpointer.metadata(where)
  except Exception:    # unreadable metadata: let the restore report the damage
    return
  tree = getattr(meta, "item_metadata", None) or getattr(meta, "tree", None) or meta
  try:
    saved = {k: tuple(v.shape) for k, v in flatten(tree).items() if hasattr(v, "shape")}
  except Exception:
    return
  want = {k: tuple(v.shape) for k, v in flatten(abstract).items()}
  _raise_on_difference(saved, want, f"saved student {where!r}")


def _raise_on_difference(got: dict, want: dict, what: str) -> None:
  problems = [f"{k}: missing" for k in sorted(set(want) - set(got))]
  problems += [f"{k}: not a parameter of the config" for k in sorted(set(got) - set(want))]
  problems += [f"{k}: shape {got[k]} vs config {want[k]}" for k in sorted(set(got) & set(want))
               if got[k] != want[k]]
  if problems:
    raise ValueError(f"{what} does not fit its BERT config: " + "; ".join(problems))


def load_text_model(spec: str) -> tuple[BertConfig, Any, Any]:
  """(config, params, tokenizer) for ``minilm`` (the packaged teacher), a directory written
  by :func:`save_student`, or a HF safetensors folder. A student without its own
  ``tokenizer.json`` uses the teacher's (students keep the teacher's vocabulary)."""
  from distill_jax.text import minilm
  from distill_jax.text.tokenize import load_tokenizer
  from distill_jax.text.weights import load_safetensors
  if spec == "minilm":
    return minilm.load_minilm()
  if not os.path.isdir(spec):
    raise FileNotFoundError(f"model {spec!r}: not 'minilm' and not a directory")
  if os.path.isfile(os.path.join(spec, CONFIG_FILE)):
    params, config = load_student(spec)
  elif os.path.isfile(os.path.join(spec, "model.safetensors")):
    params, config = load_safetensors(spec)
  else:
    raise FileNotFoundError(f"model directory {spec!r} has neither {CONFIG_FILE} (a saved "
                            "student) nor model.safetensors (a HF model)")
  own = os.path.join(spec, "tokenizer.json")
  tokenizer = load_tokenizer(own if os.path.isfile(own) else minilm.minilm_path())
  return config, params, tokenizer
