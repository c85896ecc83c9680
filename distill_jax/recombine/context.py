"""What data-driven strategies may use beyond the two partitions."""
import dataclasses
from typing import Any, Optional


@dataclasses.dataclass
class Context:
  """The teacher (a ``models.Model``) and its params, a batch of training inputs (for
  activations), where to write artefacts, and the student model."""
  teacher: Any = None
  teacher_params: Any = None
  batch: Optional[dict] = None
  workdir: Optional[str] = None
  student: Any = None        # the student model (its config: what shapes do not show)

  @property
  def has_data(self) -> bool:
    return self.teacher is not None and self.batch is not None
