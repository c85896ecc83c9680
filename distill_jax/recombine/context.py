"""What data-driven strategies may use beyond the two partitions."""
import dataclasses
from typing import Any, Optional


@dataclasses.dataclass
class Context:
  """The teacher (a ``models.Model``) and its params, a batch of training inputs (for
  activations), and where to write artefacts."""
  teacher: Any = None
  teacher_params: Any = None
  batch: Optional[dict] = None
  workdir: Optional[str] = None

  @property
  def has_data(self) -> bool:
    return self.teacher is not None and self.batch is not None
