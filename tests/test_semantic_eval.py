"""Semantic SRN's metrics in evaluation: mIoU per item and category mIoU over the split, for
a model that predicts classes and for the majority class per pixel of the training labels,
through ``evaluate`` and through scene-eval with a plugin model."""
import json
import os
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from sklearn.metrics import jaccard_score

import tiny_model
from scenetools import checkpoint as ckpt, config as configs
from scenetools.convert import convert
from scenetools.data import make_dataset
from scenetools.evaluate import evaluate, majority_baseline
from scenetools.scenefile import SceneFile
from scenetools.sources.synthetic import SyntheticSource

TESTS = Path(__file__).parent
SIZE = 16
DATA = {"protocol": "msn", "num_inputs": 1}  # 1 input view, the 2 others are targets


def objects_source(**options):
    return SyntheticSource(scenes=20, size=SIZE, seed=5, kind="objects", views=4, test_views=3,
                           categories=("chair",), **options)


@pytest.fixture(scope="module")
def chairs(tmp_path_factory):
    """20 part-labelled chairs of 16 x 16 pixels: 16 train (4 views), 2 val and 2 test (3 views)."""
    path = tmp_path_factory.mktemp("chairs") / "chairs.h5"
    return convert(objects_source(), path, codec="raw")


def data_config():
    return configs.merge(configs.DEFAULTS["data"], DATA)


def view_miou(truth, predicted):
    """mIoU of one view from sklearn: the Jaccard index of each class in either map, averaged."""
    return jaccard_score(truth, predicted, labels=sorted(set(truth) | set(predicted)), average=None).mean()


def pooled_miou(truth, predicted):
    """Category mIoU from sklearn: the per-class Jaccard index over every pixel at once."""
    return view_miou(np.concatenate(truth), np.concatenate(predicted))


def test_majority_baseline_counts_every_train_view(chairs):
    """Against a count per pixel position in numpy, at the file's size and resized to 8 x 8
    by the nearest pixel (the 2nd pixel of every 2: rows 1, 3, ...)."""
    scenes = SceneFile(chairs)
    maps = np.concatenate([scenes.read_views(int(s), fields=("semantic",))["semantic"]
                           for s in scenes.split("train")])
    assert len(maps) == 16 * 4
    counts = np.stack([(maps == c).sum(0) for c in range(5)], -1)
    expected = counts.argmax(-1)
    assert len(np.unique(expected)) > 2  # legs, seat and background at least
    assert majority_baseline(scenes, (SIZE, SIZE), 5).numpy().tolist() == expected.tolist()
    small = np.stack([(maps[:, 1::2, 1::2] == c).sum(0) for c in range(5)], -1).argmax(-1)
    assert majority_baseline(scenes, (8, 8), 5).numpy().tolist() == small.tolist()


def test_evaluation_mious_match_sklearn(chairs):
    scenes = SceneFile(chairs)
    summary, rows = evaluate(tiny_model.TinySemanticModel(), scenes, "test", data_config(),
                             torch.device("cpu"))
    dataset = make_dataset(scenes, "test", data_config(), seed=0, num_rays=None)
    majority = majority_baseline(scenes, (SIZE, SIZE), 5).reshape(-1).numpy()
    truths, predictions, baselines = [], [], []
    for item, row in zip(dataset, rows):
        truth = item["target_semantic"].reshape(2, -1).numpy()
        predicted = tiny_model.TinySemanticModel.labels(item["target_camera_pos"], item["target_rays"])
        predicted = predicted.reshape(2, -1).numpy()
        assert row["miou"] == pytest.approx(np.mean([view_miou(t, p) for t, p in zip(truth, predicted)]), abs=1e-9)
        assert row["baseline_majority_miou"] == pytest.approx(np.mean([view_miou(t, majority) for t in truth]),
                                                              abs=1e-9)
        truths += list(truth)
        predictions += list(predicted)
        baselines += [majority] * 2
    assert len(rows) == 2 and 0 < summary["miou"][0] < 1
    assert summary["category_miou"] == (pytest.approx(pooled_miou(truths, predictions), abs=1e-9), None)
    assert summary["baseline_majority_category_miou"][0] == pytest.approx(pooled_miou(truths, baselines), abs=1e-9)
    assert summary["category_miou"][0] != pytest.approx(summary["miou"][0], abs=1e-6)  # pooled, not a mean of rows


def test_no_baseline_without_a_train_split(tmp_path):
    test_only = convert(objects_source(), tmp_path / "test-only.h5", codec="raw", splits=["test"])
    summary, rows = evaluate(tiny_model.TinySemanticModel(), SceneFile(test_only), "test", data_config(),
                             torch.device("cpu"))
    assert "miou" in rows[0] and "category_miou" in summary
    assert not any("majority" in key for key in list(rows[0]) + list(summary))


def test_scene_eval_scores_classes_of_a_plugin_model(chairs, tmp_path):
    model = tiny_model.TinySemanticModel()
    checkpoint = ckpt.save(tmp_path / "semantic.pt", model_name="tiny_semantic", model=model, step=0,
                           config={"model": {"classes": 5}, "data": data_config()})
    out, images = tmp_path / "eval.json", tmp_path / "sheets"
    env = dict(os.environ, SCENETOOLS_PLUGINS="tiny_model",
               PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-m", "scenetools.cli.eval", checkpoint, chairs, "--split", "test",
                             "--out", out, "--images", images], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    results = json.loads(out.read_text())["results"]
    for key in ("miou", "category_miou", "baseline_majority_miou", "baseline_majority_category_miou"):
        assert 0 <= results[key] <= 1, key
    assert "miou_std" in results and "category_miou_std" not in results
    assert "  mIoU" in result.stdout and "  category mIoU" in result.stdout and "majority" in result.stdout
    # Each sheet: prediction, ground truth, error, classes, true classes; 96 px cells, 4 px apart.
    sheets = sorted(images.glob("*.png"))
    assert len(sheets) == 2 and iio.imread(sheets[0]).shape[1] == 56 + 5 * (96 + 4) + 4


def test_a_model_of_another_class_count_is_refused(chairs):
    """The file names 5 classes (background and a chair's 4 parts): scores over 4 are not its classes."""
    from scenetools.errors import BadInput

    with pytest.raises(BadInput, match="predicts 4 classes, the file has 5"):
        evaluate(tiny_model.TinySemanticModel(classes=4), SceneFile(chairs), "test", data_config(),
                 torch.device("cpu"))
