import math

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from scenetools.metrics import adjusted_rand_index, masked_mse, mean_std, psnr_from_mse, ssim


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
