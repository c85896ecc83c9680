"""PNG plots of a run from its files (matplotlib, no display needed)."""
import json
import os
from typing import Optional


def read_metrics(path: str) -> dict:
  """``{(phase, split): [(step, record), ...]}`` from metrics.jsonl, by step; when a resumed run
  recomputed steps, the last record of a step wins."""
  series: dict = {}
  if not os.path.exists(path):
    return series
  with open(path) as f:
    for line in f:
      record = json.loads(line)
      series.setdefault((record["phase"], record["split"]), {})[record["step"]] = record
  return {key: sorted(by_step.items()) for key, by_step in series.items()}


def smooth(values: list, window: int) -> list:
  """Trailing running mean over up to ``window`` values."""
  return [sum(values[max(0, i - window + 1):i + 1]) / (i + 1 - max(0, i - window + 1))
          for i in range(len(values))]


def plot_curves(metrics_path: str, out_path: str, title: Optional[str] = None,
                metric: str = "accuracy", metric_label: str = "accuracy (fraction correct)",
                metric_range: Optional[tuple] = (0, 1.02)) -> None:
  """Loss and ``metric`` against training step for every phase (teacher, baseline, student):
  training batches as thin lines, held-out evaluations as markers. A series without the key
  (e.g. a metric only evaluated on held-out data) is left out of that panel."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  series = read_metrics(metrics_path)
  fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4.6))
  colors = {"teacher": "tab:gray", "baseline": "tab:blue", "student": "tab:red"}
  for (phase, split), points in sorted(series.items()):
    steps = [s for s, _ in points]
    color = colors.get(phase)
    style = dict(lw=0.8, alpha=0.6) if split == "train" else dict(marker="o", lw=1.8)
    label = f"{phase} {'train batches (mean of 10 logs)' if split == 'train' else 'test'}"
    if split == "train" and phase == "student":
      label += ", KD objective"
    for ax, key in ((ax_loss, "loss"), (ax_acc, metric)):
      if any(key not in r for _, r in points):
        continue
      values = [r[key] for _, r in points]
      if split == "train":   # one batch is noisy (mixup especially): show a running mean
        values = smooth(values, 10)
      ax.plot(steps, values, color=color, label=label, **style)
  ax_loss.set_yscale("log")
  ax_loss.set_xlabel("training step")
  ax_loss.set_ylabel("loss (log scale)")
  ax_acc.set_xlabel("training step")
  ax_acc.set_ylabel(metric_label)
  if metric_range:
    ax_acc.set_ylim(*metric_range)
  for ax in (ax_loss, ax_acc):
    ax.grid(alpha=0.3)
  legend = {}
  for ax in (ax_loss, ax_acc):   # a series may be in one panel only
    for handle, label in zip(*ax.get_legend_handles_labels()):
      legend.setdefault(label, handle)
  handles, labels = list(legend.values()), list(legend)
  fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
  fig.suptitle(title or "training curves (test points: held-out split)")
  fig.tight_layout(rect=(0, 0.12, 1, 1))   # room for the shared legend below
  fig.savefig(out_path, dpi=120)
  plt.close(fig)
