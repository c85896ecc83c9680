"""What data-driven strategies may use beyond the two partitions."""
import dataclasses
from typing import Any, Callable, Optional

import numpy as np


@dataclasses.dataclass
class Context:
  """Teacher function and a batch of inputs (for activations), and where to write artefacts."""
  teacher_apply: Optional[Callable] = None
  teacher_params: Any = None
  x: Optional[np.ndarray] = None
  workdir: Optional[str] = None

  @property
  def has_data(self) -> bool:
    return self.teacher_apply is not None and self.x is not None
