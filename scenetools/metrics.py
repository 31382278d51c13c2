"""Image and segmentation metrics, as the reference papers report them.

* PSNR: per-scene MSE over that scene's target pixels -> PSNR, then the mean over scenes
  (stelzner/srt ``eval_step``), with images in [0, 1].
* SSIM: Wang et al. 2004 with an 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03,
  over the valid region, averaged over channels and pixels (skimage's
  ``structural_similarity(gaussian_weights=True, use_sample_covariance=False)``).
* ARI / FG-ARI: adjusted Rand index of the argmax segmentation against the true instance
  ids (deepmind multi_object_datasets); FG-ARI ignores background pixels (id 0).
* mIoU / category mIoU: semantic SRN's (apsk14/semantic_scene_representations,
  ``models.py:get_IOU_vals`` and ``test.py``): per image, the mean IoU of the classes present
  in the truth or the prediction, background included; over a test set, per class IoU of the
  summed intersections and unions, averaged over the classes that occur.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def psnr_from_mse(mse: torch.Tensor) -> torch.Tensor:
    return -10.0 * torch.log10(mse.clamp_min(1e-10))


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """MSE over pixels (the last dimension is colour); only where ``mask`` is true if given.
    NaN when the mask selects nothing."""
    error = ((pred.float() - target.float()) ** 2).mean(-1)
    if mask is None:
        return error.mean()
    return error[mask].mean() if mask.any() else torch.tensor(float("nan"))


SSIM_WINDOW = 11  # pixels: images smaller than this on a side have no SSIM


def _gaussian_window(size: int = SSIM_WINDOW, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Mean SSIM of images [N, H, W, C] -> [N] (each image averaged over channels and the
    valid region of the 11x11 window)."""
    x, y = (t.double().permute(0, 3, 1, 2) for t in (pred, target))
    C = x.shape[1]
    window = _gaussian_window().to(x)[None, None].expand(C, 1, SSIM_WINDOW, SSIM_WINDOW)

    def blur(t):
        return F.conv2d(t, window, groups=C)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x ** 2
    var_y = blur(y * y) - mu_y ** 2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
    return ssim_map.mean(dim=(1, 2, 3)).float()


def adjusted_rand_index(true_ids: torch.Tensor, pred_ids: torch.Tensor, ignore_background: bool = False
                        ) -> torch.Tensor:
    """ARI per item between integer labelings [B, N] (true instance ids, predicted slot ids).

    With ``ignore_background`` (FG-ARI), points whose true id is 0 are left out. As in the
    reference, an item whose (kept) true and predicted labelings both have a single cluster
    scores 1; an item with fewer than 2 kept points is NaN.
    """
    results = []
    for truth, pred in zip(true_ids.long(), pred_ids.long()):
        if ignore_background:
            keep = truth != 0
            truth, pred = truth[keep], pred[keep]
        n = truth.numel()
        if n < 2:
            results.append(float("nan"))
            continue
        _, t = torch.unique(truth, return_inverse=True)
        _, p = torch.unique(pred, return_inverse=True)
        table = torch.zeros(int(t.max()) + 1, int(p.max()) + 1, dtype=torch.float64)
        table.index_put_((t, p), torch.ones(n, dtype=torch.float64), accumulate=True)
        pairs = lambda counts: (counts * (counts - 1)).sum() / 2  # noqa: E731
        index, rows, cols = pairs(table), pairs(table.sum(1)), pairs(table.sum(0))
        expected = rows * cols / (n * (n - 1) / 2)
        maximum = (rows + cols) / 2
        if maximum == expected:  # both labelings are a single cluster (or identical trivial ones)
            results.append(1.0)
        else:
            results.append(float((index - expected) / (maximum - expected)))
    return torch.tensor(results, dtype=torch.float64)


def mean_std(values) -> tuple:
    """(mean, population std) of the finite values; (nan, nan) if there are none."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return float("nan"), float("nan")
    mean = sum(finite) / len(finite)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in finite) / len(finite))


def segmentation_scores(segmentation: torch.Tensor, instance: torch.Tensor) -> dict:
    """Mean ARI and FG-ARI of soft segmentations [B, R, S] (argmax over slots) against
    instance ids [B, R], over the items where each is defined."""
    predicted = segmentation.argmax(-1).cpu()
    instance = instance.cpu()
    scores = {"ari": adjusted_rand_index(instance, predicted),
              "fg_ari": adjusted_rand_index(instance, predicted, ignore_background=True)}
    return {name: float(values[~values.isnan()].mean()) if (~values.isnan()).any() else float("nan")
            for name, values in scores.items()}


def iou_counts(truth: torch.Tensor, predicted: torch.Tensor, num_classes: int) -> tuple:
    """Per image and class, the pixels of the intersection and of the union of the true and
    predicted class masks, as semantic SRN's ``get_IOU_vals`` counts them.

    ``truth``, ``predicted``: integer class ids [N, P] (N images of P pixels; predictions are
    the argmax of the class scores). Only classes 0..C-1 (C = ``num_classes``) are counted;
    an id outside them is in no class, as the reference loops over ``range(num_classes)``.
    Returns (intersection, union), int64 [N, C].
    """
    truth, predicted = torch.as_tensor(truth).long(), torch.as_tensor(predicted).long()
    N, C = truth.shape[0], num_classes
    offset = torch.arange(N)[:, None] * C  # image n's classes are bins n*C .. n*C + C-1

    def count(labels, keep):
        return torch.bincount((offset + labels)[keep], minlength=N * C).reshape(N, C)

    in_truth, in_predicted = (truth >= 0) & (truth < C), (predicted >= 0) & (predicted < C)
    intersection = count(truth, in_truth & (truth == predicted))
    return intersection, count(truth, in_truth) + count(predicted, in_predicted) - intersection


def mean_iou(intersection: torch.Tensor, union: torch.Tensor) -> torch.Tensor:
    """Per image mIoU [N] from :func:`iou_counts` [N, C]: the mean IoU over the classes in
    the truth or the prediction (union > 0), background included; an image without any
    class (no pixels) scores 1, as in the reference."""
    present = union > 0
    iou = intersection.double() / union.clamp_min(1)
    classes = present.sum(-1)
    return torch.where(classes > 0, (iou * present).sum(-1) / classes.clamp_min(1), 1.0)


def category_mean_iou(intersection: torch.Tensor, union: torch.Tensor) -> float:
    """Semantic SRN's "category mIoU" of counts [..., C] (:func:`iou_counts` of every test
    image): per class, summed intersection over summed union; the mean over the classes
    whose union is not 0 (NaN if none is). (The reference sums in float32; this in int64.)"""
    intersection, union = (counts.reshape(-1, counts.shape[-1]).sum(0) for counts in (intersection, union))
    present = union > 0
    return float((intersection[present].double() / union[present]).mean()) if present.any() else float("nan")


def majority_labels(label_maps, num_classes: int) -> torch.Tensor | None:
    """The most frequent class at each pixel position over label maps: ``label_maps`` an
    iterable of integer arrays [V, H, W] (e.g. the views of one scene at a time), all of one
    H x W -> int64 [H, W]. Ties go to the lower class, ids outside 0..C-1 are not counted,
    and a position without any count is 0 (background). None for no maps."""
    counts, C = None, num_classes
    for maps in label_maps:
        maps = torch.as_tensor(np.asarray(maps)).long()
        V, H, W = maps.shape
        flat = maps.reshape(V, H * W)
        keep = (flat >= 0) & (flat < C)
        bins = (torch.arange(H * W) * C + flat)[keep]  # position p's classes are bins p*C .. p*C + C-1
        found = torch.bincount(bins, minlength=H * W * C).reshape(H, W, C)
        counts = found if counts is None else counts + found
    return None if counts is None else counts.argmax(-1)
