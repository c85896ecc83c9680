"""Parameter accounting of a recombination: m, n, group sizes, M, M' and the ratio."""
import os
from typing import Optional

import numpy as np

from distill_jax.files import write_json, write_text
from distill_jax.partition import Partition


def account(teacher: Partition, student: Partition, reused: set, info: dict) -> dict:
  """Teacher size m and depth n (its groups), each group's size, student size M, how many
  student parameters came from the teacher (M') or were newly initialised, and m / M."""
  t_sizes, s_sizes = teacher.sizes(), student.sizes()
  s_reused = {g: int(sum(np.size(v) for k, v in members.items() if (g, k) in reused))
              for g, members in student.groups.items()}
  m, big_m = sum(t_sizes.values()), sum(s_sizes.values())
  big_m_reused = sum(s_reused.values())
  return {"teacher_params": m, "teacher_groups": len(t_sizes), "teacher_group_sizes": t_sizes,
          "student_params": big_m, "student_groups": len(s_sizes),
          "student_group_sizes": s_sizes, "student_group_reused": s_reused,
          "reused_params": big_m_reused, "new_params": big_m - big_m_reused,
          "compression": m / big_m, **info}


def format_accounting(report: dict) -> str:
  """The accounting as a text table."""
  lines = [f"teacher: m = {report['teacher_params']:,} params in n = "
           f"{report['teacher_groups']} groups",
           "  " + ", ".join(f"{g} {s:,}" for g, s in report["teacher_group_sizes"].items()),
           f"student ({report.get('strategy', '?')}): M = {report['student_params']:,} params",
           f"  {'group':<12} {'params':>10} {'reused':>10} {'new':>10}"]
  for g, size in report["student_group_sizes"].items():
    r = report["student_group_reused"][g]
    lines.append(f"  {g:<12} {size:>10,} {r:>10,} {size - r:>10,}")
  lines.append(f"M' = {report['reused_params']:,} reused from the teacher, "
               f"{report['new_params']:,} newly initialised; compression m/M = "
               f"{report['compression']:.2f}x")
  for key, f in report.get("factorized", {}).items():
    weighted = (f", {f['token_weighted_error']:.3f} weighted by the calibration tokens"
                if f.get("token_weighted_error") is not None else "")
    lines.append(f"factorised {key}: rank {f['rank']}, relative error "
                 f"{f['relative_error']:.3f}{weighted}")
  return "\n".join(lines)


def write_accounting(report: dict, workdir: Optional[str]) -> None:
  if workdir:
    write_json(os.path.join(workdir, "accounting.json"), report)
    write_text(os.path.join(workdir, "accounting.txt"), format_accounting(report) + "\n")
