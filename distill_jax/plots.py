"""PNG plots of a run from its files (matplotlib, no display needed)."""
import json
import logging
import os

from distill_jax.files import atomic


def read_metrics(path: str) -> dict:
  """``{(phase, split): [(step, record), ...]}`` from metrics.jsonl, by step; when a resumed run
  recomputed steps, the last record of a step wins. A line a kill tore is skipped (logged)."""
  series: dict = {}
  if not os.path.exists(path):
    return series
  with open(path) as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
        series.setdefault((record["phase"], record["split"]), {})[record["step"]] = record
      except (ValueError, KeyError, TypeError):
        logging.warning("%s:%d is not a whole record (a write was interrupted?): skipped",
                        path, number)
  return {key: sorted(by_step.items()) for key, by_step in series.items()}


def table(rows: list) -> str:
  """Rows of cells (strings) as aligned columns, with a rule under the first (header) row."""
  widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
  lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
  return "\n".join(lines[:1] + ["  ".join("-" * w for w in widths)] + lines[1:])


def smooth(values: list, window: int) -> list:
  """Trailing running mean over up to ``window`` values."""
  return [sum(values[max(0, i - window + 1):i + 1]) / (i + 1 - max(0, i - window + 1))
          for i in range(len(values))]


def plot_curves(metrics_path: str, out_path: str, metric: str = "accuracy") -> None:
  """Loss and ``metric`` against training step for every phase: training batches as thin
  lines (running mean of 10 logs), held-out evaluations as markers; a series without the key
  is left out of that panel."""
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
    label = f"{phase} {'train batches' if split == 'train' else 'held-out'}"
    for ax, key in ((ax_loss, "loss"), (ax_acc, metric)):
      if any(key not in r for _, r in points):
        continue
      values = [r[key] for _, r in points]
      if split == "train":   # one batch is noisy (mixup especially): show a running mean
        values = smooth(values, 10)
      ax.plot(steps, values, color=color, label=label, **style)
  ax_loss.set(yscale="log", xlabel="training step", ylabel="loss (log scale)")
  ax_acc.set(xlabel="training step", ylabel=metric, ylim=(0, 1.02) if metric == "accuracy"
             else None)
  legend = {}
  for ax in (ax_loss, ax_acc):   # a series may be in one panel only
    ax.grid(alpha=0.3)
    legend.update(zip(reversed(ax.get_legend_handles_labels()[1]),
                      reversed(ax.get_legend_handles_labels()[0])))
  fig.legend(list(legend.values()), list(legend), loc="lower center", ncol=3, fontsize=8,
             frameon=False)
  fig.tight_layout(rect=(0, 0.12, 1, 1))   # room for the shared legend below
  with atomic(out_path) as tmp:
    fig.savefig(tmp, dpi=120)
  plt.close(fig)
