import math

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score, jaccard_score

from scenetools.metrics import (adjusted_rand_index, category_mean_iou, iou_counts, majority_labels, masked_mse,
                                mean_iou, mean_std, psnr_from_mse, ssim)


def test_psnr_by_hand():
    pred = torch.zeros(4, 3)
    target = torch.full((4, 3), 0.1)
    target[0] = 0.3  # squared errors: 3 x 0.09 and 9 x 0.01 over 12 values
    mse = (3 * 0.09 + 9 * 0.01) / 12
    assert float(psnr_from_mse(masked_mse(pred, target))) == pytest.approx(-10 * math.log10(mse), rel=1e-5)
    mask = torch.tensor([True, False, False, False])
    assert float(psnr_from_mse(masked_mse(pred, target, mask))) == pytest.approx(-10 * math.log10(0.09), rel=1e-5)
    assert math.isnan(float(masked_mse(pred, target, torch.zeros(4, dtype=torch.bool))))


def test_ssim_known_values():
    rng = np.random.default_rng(0)
    image = torch.tensor(rng.uniform(size=(1, 32, 32, 3)), dtype=torch.float32)
    assert float(ssim(image, image)) == pytest.approx(1.0, abs=1e-6)
    # Constant images a and b: the structure terms are 1 and SSIM = (2ab + C1) / (a^2 + b^2 + C1).
    a, b, c1 = 0.2, 0.6, 0.01 ** 2
    value = float(ssim(torch.full((1, 20, 20, 3), a), torch.full((1, 20, 20, 3), b)))
    assert value == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), rel=1e-6)
    # A fixed pair, value from skimage.metrics.structural_similarity(x, y, channel_axis=-1,
    # gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0).
    x = np.linspace(0, 1, 24 * 24 * 3).reshape(24, 24, 3) ** 2
    y = np.clip(x + 0.1 * np.sin(np.arange(24 * 24 * 3).reshape(24, 24, 3)), 0, 1)
    got = float(ssim(torch.tensor(x[None]), torch.tensor(y[None])))
    assert got == pytest.approx(SKIMAGE_REFERENCE, abs=1e-5)


SKIMAGE_REFERENCE = 0.6345714597380753  # skimage 0.26, computed once by hand


def test_ari_and_fg_ari_match_sklearn():
    rng = np.random.default_rng(1)
    for trial in range(20):
        n = int(rng.integers(20, 200))
        truth = rng.integers(0, int(rng.integers(1, 6)), n)
        pred = np.where(rng.uniform(size=n) < 0.7, truth, rng.integers(0, 7, n))  # mostly right
        ari = adjusted_rand_index(torch.tensor(truth)[None], torch.tensor(pred)[None])[0]
        assert float(ari) == pytest.approx(adjusted_rand_score(truth, pred), abs=1e-10)
        fg = truth != 0
        if fg.sum() >= 2:
            fg_ari = adjusted_rand_index(torch.tensor(truth)[None], torch.tensor(pred)[None], ignore_background=True)
            assert float(fg_ari[0]) == pytest.approx(adjusted_rand_score(truth[fg], pred[fg]), abs=1e-10)


def test_ari_edge_cases():
    one = torch.zeros(1, 10, dtype=torch.long)
    assert float(adjusted_rand_index(one, one)[0]) == 1.0  # both a single cluster
    split = torch.tensor([[0] * 5 + [1] * 5])
    assert float(adjusted_rand_index(split, split)[0]) == pytest.approx(1.0)
    assert float(adjusted_rand_index(split, 1 - split)[0]) == pytest.approx(1.0)  # labels are arbitrary
    assert float(adjusted_rand_index(one, split)[0]) == pytest.approx(0.0)
    assert math.isnan(float(adjusted_rand_index(torch.tensor([[0, 0, 3]]), torch.tensor([[1, 2, 3]]),
                                                ignore_background=True)[0]))


def test_mean_std_skips_nan():
    assert mean_std([1.0, float("nan"), 3.0]) == (2.0, 1.0)


# Two 3 x 3 class maps (C = 4 classes), counted by hand below.
TRUTH_A = [[0, 0, 1],
           [0, 1, 1],
           [0, 1, 1]]
PRED_A = [[0, 0, 1],
          [0, 2, 1],  # class 2 only in the prediction
          [1, 1, 1]]
TRUTH_B = [[0, 0, 0],
           [0, 3, 3],
           [0, 3, 3]]
PRED_B = [[0, 0, 0],
          [0, 0, 3],
          [0, 3, 3]]


def flat(*maps):
    return torch.tensor(maps).reshape(len(maps), -1)


def test_miou_by_hand():
    """Image A: class 0 meets in 3 pixels of 4 in either, class 1 in 4 of 6, class 2 (only
    predicted) in 0 of 1, class 3 is nowhere and does not count: (3/4 + 4/6 + 0) / 3."""
    intersection, union = iou_counts(flat(TRUTH_A), flat(PRED_A), 4)
    assert intersection.tolist() == [[3, 4, 0, 0]] and union.tolist() == [[4, 6, 1, 0]]
    assert float(mean_iou(intersection, union)[0]) == pytest.approx(17 / 36, abs=1e-12)
    # Image B: class 0 in 5 of 6, class 3 in 3 of 4; a perfect prediction scores 1.
    both = mean_iou(*iou_counts(flat(TRUTH_A, TRUTH_B, TRUTH_A), flat(PRED_A, PRED_B, TRUTH_A), 4))
    assert both.tolist() == pytest.approx([17 / 36, (5 / 6 + 3 / 4) / 2, 1.0], abs=1e-12)


def test_miou_without_any_class_is_one():
    """No class present (no pixels, or only ids outside 0..C-1) scores 1, as the reference."""
    empty = torch.zeros(1, 0, dtype=torch.long)
    assert mean_iou(*iou_counts(empty, empty, 4)).tolist() == [1.0]
    outside = torch.tensor([[7, 7, -1]])
    assert mean_iou(*iou_counts(outside, outside, 4)).tolist() == [1.0]
    # An id outside the classes in the truth only leaves the predicted class's union larger.
    intersection, union = iou_counts(torch.tensor([[7, 1]]), torch.tensor([[1, 1]]), 4)
    assert intersection.tolist() == [[0, 1, 0, 0]] and union.tolist() == [[0, 2, 0, 0]]


def test_per_class_iou_matches_sklearn_jaccard():
    """Random maps over C classes, the truth drawing from some of them and the errors from
    others, so that most have classes in neither (which do not count)."""
    rng = np.random.default_rng(2)
    for trial in range(20):
        C, P = int(rng.integers(3, 9)), int(rng.integers(1, 300))
        truth = rng.choice(rng.choice(C, int(rng.integers(1, C)), replace=False), P)
        pred = np.where(rng.uniform(size=P) < 0.6, truth, rng.choice(rng.choice(C, 2), P))
        intersection, union = iou_counts(torch.tensor(truth)[None], torch.tensor(pred)[None], C)
        present = sorted(set(truth) | set(pred))
        expected = jaccard_score(truth, pred, labels=present, average=None)
        assert (intersection[0, present].double() / union[0, present]).numpy() == pytest.approx(expected, abs=1e-12)
        assert float(mean_iou(intersection, union)[0]) == pytest.approx(expected.mean(), abs=1e-12)
        assert (union[0] == 0).sum() == C - len(present)


def test_category_miou_by_hand():
    """Over images A and B (C = 5: class 4 is nowhere and is dropped): class 0 meets in
    3 + 5 of 4 + 6 pixels, class 1 in 4 of 6, class 2 in 0 of 1, class 3 in 3 of 4."""
    intersection, union = iou_counts(flat(TRUTH_A, TRUTH_B), flat(PRED_A, PRED_B), 5)
    expected = (8 / 10 + 4 / 6 + 0 + 3 / 4) / 4
    assert category_mean_iou(intersection, union) == pytest.approx(expected, abs=1e-12)
    assert category_mean_iou(intersection.sum(0), union.sum(0)) == pytest.approx(expected, abs=1e-12)
    assert math.isnan(category_mean_iou(torch.zeros(5, dtype=torch.long), torch.zeros(5, dtype=torch.long)))


def test_majority_labels_by_hand():
    """Three 2 x 3 maps (C = 3) in two groups: per position the most frequent class; the
    tie at (1, 1) between 0 and 2 goes to 0; id 9 is no class, so (1, 2) is 1."""
    scene_1 = np.array([[[0, 1, 1], [2, 2, 1]],
                        [[0, 1, 2], [2, 0, 9]]])
    scene_2 = np.array([[[1, 1, 2], [2, 9, 9]]])
    assert majority_labels([scene_1, scene_2], 3).tolist() == [[0, 1, 2], [2, 0, 1]]
    assert majority_labels([], 3) is None
