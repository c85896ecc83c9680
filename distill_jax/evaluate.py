r"""Score a model on a task's held-out data; the score is the last line printed.

  python -m distill_jax.evaluate --config=configs/minilm_l6_to_l3.py --model=minilm \
      --config.data.eval_path=../shared/data/stsbenchmark/sts-dev.csv

``--model``: an export directory or a pretrained model the task reads (``minilm``, a HF folder).
"""
import time

import jax
from absl import flags

from distill_jax import cli, runner, sharding
from distill_jax.tasks import TASKS

flags.DEFINE_string("model", None, "An export directory or a pretrained model name.")
FLAGS = flags.FLAGS


def evaluate(config, model_spec: str) -> dict:
  """The task's held-out metrics of ``model_spec``."""
  start = time.perf_counter()
  task = TASKS.get(config.task)
  data = task.load(config)
  model, params = runner.load_model(task, model_spec, data, "--model")
  metrics = task.evaluate(model, params, data, sharding.make_mesh(config.mesh.to_dict()), config)
  texts = {k: v for k, v in metrics.items() if not isinstance(v, (int, float))}
  for k, v in texts.items():             # e.g. an LM's samples
    print(f"{k}:\n  " + "\n  ".join(map(repr, v)))
  print(f"model {model_spec} ({model.name}), data {data.name}: "
        + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k not in texts)
        + f"; {time.perf_counter() - start:.1f} s on {jax.devices()[0].platform}; {task.metric}:")
  print(f"{metrics[task.metric]:.4f}")
  return metrics


if __name__ == "__main__":
  flags.mark_flag_as_required("model")
  cli.run(lambda config: evaluate(config, FLAGS.model))
