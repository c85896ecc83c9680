"""``select``: student layer i is a copy of teacher layer ``layers[i]``."""
import re
from typing import Any, Sequence

from distill_jax.paths import count_params, flatten, unflatten

LAYER_PATTERN = r"Dense_(\d+)"


def layer_indices(params: Any, pattern: str = LAYER_PATTERN) -> list[int]:
  """Sorted indices of the top-level modules whose name fullmatches ``pattern``."""
  found = sorted({int(m.group(1)) for name in params if (m := re.fullmatch(pattern, name))})
  if not found:
    raise ValueError(f"no module name matches {pattern!r}; modules are {list(params)}")
  return found


def select(teacher_params: Any, student_params: Any, layers: Sequence[int],
           pattern: str = LAYER_PATTERN) -> tuple[Any, dict]:
  """Copy teacher layers ``layers`` (negative indices count from the head) into the student.

  ``len(layers)`` must equal the student's depth. Modules that the pattern does not name are
  left as initialised. Every copied array must match the student's shape exactly.
  """
  t_layers, s_layers = layer_indices(teacher_params, pattern), layer_indices(student_params, pattern)
  if len(layers) != len(s_layers):
    raise ValueError(f"select: {len(layers)} teacher layers {list(layers)} given for a student "
                     f"of depth {len(s_layers)}")
  name = pattern.replace(r"(\d+)", "{}")
  chosen = []
  for i in layers:
    if not -len(t_layers) <= i < len(t_layers):
      raise ValueError(f"select: layer {i} is out of range for a teacher of depth {len(t_layers)}")
    chosen.append(t_layers[i])
  teacher_flat, student_flat = flatten(teacher_params), flatten(student_params)
  out, reused = dict(student_flat), 0
  for s_idx, t_idx in zip(s_layers, chosen):
    s_prefix, t_prefix = name.format(s_idx) + "/", name.format(t_idx) + "/"
    for path, value in student_flat.items():
      if not path.startswith(s_prefix):
        continue
      t_path = t_prefix + path[len(s_prefix):]
      if t_path not in teacher_flat:
        raise ValueError(f"select: teacher has no parameter {t_path!r} for student {path!r}")
      if teacher_flat[t_path].shape != value.shape:
        raise ValueError(f"select: teacher {t_path!r} has shape {teacher_flat[t_path].shape} but "
                         f"student {path!r} has shape {value.shape}")
      out[path] = teacher_flat[t_path]
      reused += value.size
  return unflatten(out), {"strategy": "select", "teacher_layers": chosen, "reused_params": reused,
                          "student_params": count_params(student_params)}
