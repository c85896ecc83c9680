"""Text classification: the TSV reader and its errors, the augmentation, the classifier head's
shapes, teacher.init from the packaged encoder, the copy strategy, a KD value by hand, and the
SST-2 config's two students end to end on the repository's small fixture."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax import checks, losses, models, recombine
from distill_jax.config import load
from distill_jax.errors import InputError, MissingInput
from distill_jax.main import run_job
from distill_jax.paths import flatten
from distill_jax.tasks.text_classification import augment, read_tsv, unlabel

CONFIG = os.path.join(os.path.dirname(__file__), "..", "configs", "sst2.py")


def write(path, text):
  path.write_text(text, encoding="utf-8")
  return str(path)


def test_read_tsv_reads_glue_rows_and_names_bad_ones(tmp_path):
  sentences, labels = read_tsv(write(tmp_path / "ok.tsv",
                                     "sentence\tlabel\nfine film \t1\n\nbad one\t0\n"))
  assert sentences == ["fine film", "bad one"] and labels.tolist() == [1, 0]
  with pytest.raises(InputError, match=r"line 3: 3 tab-separated fields"):
    read_tsv(write(tmp_path / "a.tsv", "sentence\tlabel\nok\t1\nx\t1\textra\n"))
  with pytest.raises(InputError, match=r"line 2: label 'positive' is not an integer"):
    read_tsv(write(tmp_path / "b.tsv", "sentence\tlabel\ngood\tpositive\n"))
  with pytest.raises(InputError, match=r"no \['label'\] column"):
    read_tsv(write(tmp_path / "c.tsv", "index\tsentence\n0\tgood\n"))
  with pytest.raises(MissingInput, match="nothing.tsv"):
    read_tsv(str(tmp_path / "nothing.tsv"))


def test_augmentation_keeps_cls_sep_and_takes_ngrams_and_masks():
  ids = np.array([[101, 5, 6, 7, 8, 9, 102, 0]], np.int32)
  tokens = {"input_ids": ids, "attention_mask": (ids > 0).astype(np.int32),
            "token_type_ids": np.zeros_like(ids)}
  masked = augment(tokens, copies=3, mask_prob=1.0, ngram_prob=0.0, mask_id=103, seed=0)
  assert masked["input_ids"].tolist() == [[101, 103, 103, 103, 103, 103, 102, 0]] * 3
  grams = augment(tokens, copies=20, mask_prob=0.0, ngram_prob=1.0, mask_id=103, seed=0)
  for row, mask in zip(grams["input_ids"], grams["attention_mask"]):
    n = mask.sum() - 2
    words = row[1:1 + n].tolist()
    assert row[0] == 101 and row[n + 1] == 102 and 1 <= n <= 5 and not row[n + 2:].any()
    assert words == list(range(words[0], words[0] + n))       # a contiguous n-gram


def test_the_classifier_head_reads_the_mean_of_the_real_tokens():
  model = models.build({"name": "bert_classifier", "num_layers": 1, "hidden_size": 8,
                        "num_heads": 2, "intermediate_size": 16, "vocab_size": 50,
                        "with_pooler": False}, {"num_classes": 3})
  batch = {"input_ids": jnp.array([[1, 2, 3, 0], [4, 5, 0, 0]]),
           "attention_mask": jnp.array([[1, 1, 1, 0], [1, 1, 0, 0]]),
           "token_type_ids": jnp.zeros((2, 4), jnp.int32)}
  params = model.init(jax.random.key(0), batch)
  out, _ = model.apply(params, batch)
  assert out["logits"].shape == (2, 3) and out["pooled"].shape == (2, 8)
  head = params["classifier"]
  np.testing.assert_allclose(out["logits"], out["pooled"] @ head["kernel"] + head["bias"],
                             rtol=1e-5, atol=1e-6)
  assert set(params) == {"embeddings", "encoder", "classifier"}


def test_kd_value_by_hand_at_temperature_two():
  student, teacher = jnp.array([[0.0, 2.0]]), jnp.array([[2.0, 0.0]])
  p = np.array([1 / (1 + np.exp(-1.0)), 1 / (1 + np.exp(1.0))])      # softmax([2, 0] / 2)
  q = p[::-1]
  expected = 4.0 * np.sum(p * np.log(p / q))                           # T^2 KL(p || q)
  np.testing.assert_allclose(losses.kd({"logits": student}, {"logits": teacher}, {},
                                       temperature=2.0), expected, rtol=1e-6)
  # logit MSE: rows (0, 2) vs (2, 0) and (1, 1) vs (1, -1): (4 + 4 + 0 + 4) / 2 rows
  two = jnp.array([[0.0, 2.0], [1.0, 1.0]]), jnp.array([[2.0, 0.0], [1.0, -1.0]])
  assert float(losses.logit_mse({"logits": two[0]}, {"logits": two[1]}, {})) == 6.0


def test_copy_strategy_copies_the_named_groups_only():
  teacher = {"embeddings": {"word": {"embedding": np.ones((5, 3))}},
             "rest": {"kernel": np.ones((3, 2))}}
  student = {"embeddings": {"word": {"embedding": np.zeros((5, 3))}},
             "rest": {"kernel": np.zeros((3, 4))}}
  rules = (("regex", r"embeddings/.*", "embeddings"), ("regex", ".*", "rest"))
  params, report = recombine.recombine(teacher, student, strategy="copy", rules=rules,
                                       groups=("embeddings",))
  flat = flatten(params)
  assert (flat["embeddings/word/embedding"] == 1).all() and (flat["rest/kernel"] == 0).all()
  assert report["reused_params"] == 15
  with pytest.raises(InputError, match="copy: group"):
    recombine.recombine(teacher, student, strategy="copy", rules=rules, groups=("nothing",))


@pytest.fixture(scope="module")
def minilm_job(tmp_path_factory):
  """The smoke SST-2 job (its teacher: the packaged encoder's first 2 layers, fine-tuned)."""
  import contextlib
  import io
  workdir = tmp_path_factory.mktemp("sst2")
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    summary = run_job(load(CONFIG, "smoke"), str(workdir / "job"))
  return workdir / "job", summary, out.getvalue()


def test_sst2_minilm_student_end_to_end_with_the_encoder_as_teacher_init(minilm_job):
  _, summary, printed = minilm_job
  # The packaged encoder's first 2 layers start the teacher; only its head is fresh.
  assert "teacher.init=minilm: 37 of 39 arrays" in printed
  assert "initialised fresh: 2 (classifier/bias, classifier/kernel)" in printed
  assert summary["student"]["init"]["reused_params"] == summary["student"]["params"]
  for row in ("teacher", "student"):
    assert 0.0 <= summary[row]["accuracy"] <= 1.0
  assert 0.0 <= summary["student"]["agreement"] <= 1.0


def test_sst2_cnn_over_the_teachers_frozen_embeddings(minilm_job, tmp_path):
  config = load(CONFIG, "cnn,augment,smoke")
  with config.unlocked():
    config.teacher.load = str(minilm_job[0] / "teacher" / "export")    # reuse, as documented
    config.distill.cache = "full"
  summary = run_job(config, str(tmp_path / "job"))
  assert summary["baseline"]["from_init"] is True
  # the embedding table (30,522 x 384) is reused; the convolutions and the head are new
  assert summary["student"]["init"]["reused_params"] == 30522 * 384
  convs = sum(w * 384 * 100 + 100 for w in (3, 4, 5))
  assert summary["student"]["params"] == 30522 * 384 + convs + 300 * 2 + 2
  # 40 labelled rows and 40 augmented ones, batches of 8, 10 steps: the labels-only baseline
  # reads the labelled rows only (two epochs of 5 steps), KD reads all (one epoch of 10)
  epochs = {}
  for phase in ("baseline", "student"):
    meta = tmp_path / "job" / phase / "checkpoints" / "10" / "meta" / "metadata"
    epochs[phase] = json.loads(meta.read_text())["data"]["epoch"]
  assert epochs == {"baseline": 2, "student": 1}
  # the teacher's logits were computed once, for all 80 rows (distill.cache="full")
  with np.load(tmp_path / "job" / "teacher_cache" / "outputs.npz") as cached:
    assert cached["teacher_logits"].shape == (80, 2)


def test_a_teacher_init_of_another_shape_names_the_path(tmp_path):
  config = load(CONFIG, "smoke")
  with config.unlocked():
    config.teacher.model.hidden_size, config.teacher.model.num_heads = 64, 4
  with pytest.raises(InputError, match=r"teacher.init='minilm': .* has shape \(.*384"):
    run_job(config, str(tmp_path / "job"))


def test_the_validation_split_holds_out_labelled_rows_only(minilm_job):
  from distill_jax.tasks import TASKS
  config = load(CONFIG, "smoke")
  with config.unlocked():
    config.data.augment.copies = 1
  task = TASKS.get("text_classification")
  data = task.load(config)
  assert data.num_train == 80 and (data.train["y"] == -1).sum() == 40
  val = task.validation(data, 0.25, seed=0)
  assert len(val.eval["y"]) == 10 and (val.eval["y"] >= 0).all()
  assert val.num_train == 70 and (val.train["y"] == -1).sum() == 40
  assert (data.teacher_only == (data.train["y"] == -1)).all()
  assert (val.teacher_only == (val.train["y"] == -1)).all()


def test_a_labelled_fraction_keeps_a_seeded_share_of_the_labels():
  labels = np.array([0, 1, 1, 0, 1, 0, 0, 1])
  kept = unlabel(labels, 0.25, seed=3)
  assert (kept >= 0).sum() == 2 and (kept[kept >= 0] == labels[kept >= 0]).all()
  assert (kept == -1).sum() == 6
  assert (unlabel(labels, 0.25, seed=3) == kept).all()
  assert not (unlabel(labels, 0.5, seed=4) == unlabel(labels, 0.5, seed=5)).all()
  assert unlabel(labels, 1.0, seed=0) is labels
  assert (unlabel(labels, 0.01, seed=0) >= 0).sum() == 1          # at least one row
  for bad in (0.0, 1.5, "half"):
    with pytest.raises(InputError, match=r"data.labelled.fraction=.* must be in \(0, 1\]"):
      unlabel(labels, bad, seed=0)


def test_unlabelled_rows_are_seen_by_the_teacher_terms_only():
  from distill_jax.tasks import TASKS
  config = load(CONFIG, "smoke")
  with config.unlocked():
    config.data.labelled.fraction = 0.25
    config.data.augment.copies = 1
  data = TASKS.get("text_classification").load(config)
  # 40 rows, 10 of them labelled, and 40 augmented copies: 70 rows the labels-only phases
  # (the teacher's fine-tune, the baseline) skip
  assert data.num_train == 80 and (data.train["y"][:40] >= 0).sum() == 10
  assert (data.teacher_only == (data.train["y"] == -1)).all() and data.teacher_only.sum() == 70
  assert data.identity["labelled"] == {"fraction": 0.25, "seed": 0}


def test_text_only_data_settings_are_refused_for_other_tasks():
  config = load(os.path.join(os.path.dirname(CONFIG), "digits_mlp10_to3.py"))
  checks.check_values(config)
  for key, value in (("labelled", {"fraction": 0.5, "seed": 0}), ("augment", {"copies": 2})):
    changed = load(os.path.join(os.path.dirname(CONFIG), "digits_mlp10_to3.py"))
    with changed.unlocked():
      changed.data[key].update(value)
    with pytest.raises(InputError, match=rf"data.{key}.* applies to task 'text_classification' "
                                         "only, not 'classification'"):
      checks.check_values(changed)
