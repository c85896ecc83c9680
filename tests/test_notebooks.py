"""Every notebook in colabs/ runs top to bottom (small settings), so none can silently rot."""
import glob
import os

import nbformat
import pytest
from nbclient import NotebookClient

from tests.helpers import ROOT

NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, "colabs", "*.ipynb")))


def test_there_are_notebooks():
  assert any(p.endswith("quickstart.ipynb") for p in NOTEBOOKS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_runs_top_to_bottom(path, monkeypatch, tmp_path):
  nb = nbformat.read(path, as_version=4)
  assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), \
      f"{path}: clear outputs before committing"
  monkeypatch.setenv("SMOKE", "1")
  # The notebooks' workdirs (tempfile.mkdtemp; lm_distill's holds 0.8 GB of checkpoints) go
  # under pytest's temporary folder, which pytest prunes, not into /tmp for good.
  monkeypatch.setenv("TMPDIR", str(tmp_path))
  NotebookClient(nb, timeout=600, kernel_name="python3",
                 resources={"metadata": {"path": os.path.join(ROOT, "colabs")}}).execute()
  printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                    for o in c.outputs)
  if path.endswith("quickstart.ipynb"):
    assert "student distilled" in printed and "compression" in printed
    assert "val_accuracy" in printed           # the graph section's job ran
  if path.endswith("minilm_distill.ipynb"):
    assert "student vs teacher cosine" in printed and "of the teacher" in printed
    assert "curves.png" in printed and "model.safetensors" in printed
    assert "offline (or SMOKE): the repository's fixtures" in printed
  if os.path.basename(path) == "lm_distill.ipynb":     # not minilm_distill.ipynb
    assert "teacher perplexity" in printed and "pruned (influence_cosine)" in printed
    assert "pruned (mlp_1024)" in printed and "reused from the teacher" in printed
    assert "student distilled" in printed and "sample_nll" in printed and "kl_teacher" in printed
  if path.endswith("partition_rules.ipynb"):
    assert "student distilled" in printed     # the registered residual MLP ran through main


def test_notebooks_install_from_the_one_repository_url():
  import distill_jax
  for path in NOTEBOOKS:
    setup = nbformat.read(path, as_version=4).cells[1].source
    assert f'REPOSITORY = "{distill_jax.REPOSITORY}"' in setup, path
