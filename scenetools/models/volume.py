"""Volume rendering for NeRF-like models: where to sample along each ray, and how to composite.

A ray is ``camera_pos + t * direction`` with unit directions, so ``t`` is the distance along
the ray. Every function broadcasts over leading dimensions (``...`` = rays) and takes ``near``
and ``far`` per ray.

Compositing follows NeRF: the density of sample i fills the segment from t_i to t_{i+1}, so
its opacity is ``alpha_i = 1 - exp(-sigma_i * delta_i)``, the light reaching it is the
transmittance ``T_i = prod_{j<i} (1 - alpha_j)``, and its weight is ``T_i * alpha_i``. The last
sample fills a segment of a given length (by default as long as the one before it).
:func:`termination_weights` is ObSuRF's variant: the termination density ``sigma_i * T_i`` at
the samples, normalised over them.
"""
from __future__ import annotations

import torch


def coarse_depths(near: torch.Tensor, far: torch.Tensor, num: int, stratified: bool = False) -> torch.Tensor:
    """near, far [...] -> [..., num] sorted distances from near to far.

    Deterministic: evenly spaced, both ends included (the last sample sits at ``far``, so a
    backdrop there is always seen). Stratified: each sample but the last uniform in its bin
    [t_i, t_i+1); the last stays at ``far``.
    """
    steps = torch.arange(num, device=near.device, dtype=near.dtype)
    if stratified and num > 1:
        steps = steps + torch.cat([torch.rand(near.shape + (num - 1,), device=near.device, dtype=near.dtype),
                                   torch.zeros(near.shape + (1,), device=near.device, dtype=near.dtype)], -1)
    fraction = steps / max(num - 1, 1)
    return near[..., None] + (far - near)[..., None] * fraction


def segment_lengths(depths: torch.Tensor, last=None) -> torch.Tensor:
    """[..., N] sorted distances -> [..., N] lengths t_{i+1} - t_i; the last is ``last`` (a
    number or [...]) or, if None, repeats the one before."""
    deltas = depths[..., 1:] - depths[..., :-1]
    if last is None:
        last = deltas[..., -1:]
    else:
        last = torch.as_tensor(last, dtype=depths.dtype, device=depths.device).expand(depths.shape[:-1])[..., None]
    return torch.cat([deltas, last], -1)


def composite(density: torch.Tensor, depths: torch.Tensor, last=None) -> torch.Tensor:
    """Weights [..., N] of the samples of each ray, from density [..., N] at sorted depths [..., N]
    (``last``: the length of the last sample's segment, see :func:`segment_lengths`).

    Their sum is the ray's opacity (accumulated alpha); 1 - sum is what passes beyond the last
    segment. Computed in log space (a cumulative sum of sigma * delta), which is exact for
    large densities.
    """
    optical_depth = density * segment_lengths(depths, last)
    # log transmittance before each sample: minus the optical depth of everything in front
    log_transmittance = torch.cat([torch.zeros_like(optical_depth[..., :1]), -optical_depth.cumsum(-1)[..., :-1]], -1)
    return torch.exp(log_transmittance) * -torch.expm1(-optical_depth)


def termination_weights(density: torch.Tensor, depths: torch.Tensor) -> torch.Tensor:
    """Weights [..., N] summing to 1 over the samples of each ray: the termination density
    sigma_i * T_i at each sample, normalised (the ObSuRF reference's ``draw_nerf``).

    The density of sample i fills the segment up to sample i + 1 (the last fills none). Unlike
    NeRF's weights these do not integrate over segments: where samples crowd (fine samples),
    they count more. ObSuRF's depth likelihood trains this density (log sigma just behind the
    surface minus the optical depth in front of it) rather than opacity, so its surfaces are
    thin dense shells that NeRF compositing would render half transparent.
    """
    optical_depth = density[..., :-1] * (depths[..., 1:] - depths[..., :-1])
    log_transmittance = torch.cat([torch.zeros_like(density[..., :1]), -optical_depth.cumsum(-1)], -1)
    weights = density * torch.exp(log_transmittance)
    return weights / weights.sum(-1, keepdim=True).clamp_min(1e-30)


def expected_depth(weights: torch.Tensor, depths: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """[...] mean termination distance of the rays that terminate: sum(w t) / sum(w)."""
    return (weights * depths).sum(-1) / (weights.sum(-1) + eps)


def fine_depths(weights: torch.Tensor, depths: torch.Tensor, near: torch.Tensor, far: torch.Tensor, num: int,
                stratified: bool = False) -> torch.Tensor:
    """Importance samples [..., num] (sorted, no gradient) from the coarse weights [..., N] at
    sorted ``depths`` [..., N], as the ObSuRF reference draws them.

    The weights are normalised to sum to 1 (the distribution of where the ray stops). The
    histogram has one bin before each sample (from near or the previous sample up to it) and one
    past the last; each sample's weight goes 75% to the bin before it and 25% to the bin after,
    since a surface sits in front of the first sample that sees it. A small floor (1e-5 per bin)
    keeps every bin reachable. Samples are drawn by inverting the piecewise-linear CDF, at
    evenly spaced quantiles (deterministic) or uniform ones, and clipped to [near, far].
    """
    weights, depths = weights.detach(), depths.detach()
    weights = weights / weights.sum(-1, keepdim=True).clamp_min(1e-10)  # where the ray stops, if it does
    past_end = depths[..., -1:] + 0.5 * (depths[..., -1:] - depths[..., -2:-1])
    borders = torch.cat([near[..., None].to(depths), depths, past_end], -1)  # [..., N + 2]
    histogram = torch.cat([0.75 * weights, torch.zeros_like(weights[..., :1])], -1)
    histogram[..., 1:] += 0.25 * weights
    histogram = histogram + 1e-5
    cdf = torch.cat([torch.zeros_like(histogram[..., :1]), histogram.cumsum(-1)], -1)
    cdf = cdf / cdf[..., -1:]

    shape = weights.shape[:-1] + (num,)
    if stratified:
        u = torch.rand(shape, device=weights.device, dtype=cdf.dtype).sort(-1).values
    else:
        u = ((torch.arange(num, device=weights.device, dtype=cdf.dtype) + 0.5) / num).expand(shape)
    above = torch.searchsorted(cdf, u.contiguous(), right=True).clamp(1, cdf.shape[-1] - 1)
    below = above - 1
    cdf_below, cdf_above = cdf.gather(-1, below), cdf.gather(-1, above)
    t_below, t_above = borders.gather(-1, below), borders.gather(-1, above)
    fraction = (u - cdf_below) / (cdf_above - cdf_below).clamp_min(1e-12)
    samples = t_below + fraction * (t_above - t_below)
    return torch.minimum(torch.maximum(samples, near[..., None]), far[..., None])


def merge(coarse: torch.Tensor, fine: torch.Tensor, *values: tuple):
    """Sort the union of two sample sets: depths [..., N] and [..., M] -> [..., N + M], and
    each of ``values`` given as a (coarse [..., N, *], fine [..., M, *]) pair reordered alike."""
    depths, order = torch.sort(torch.cat([coarse, fine], -1), -1)
    out = [depths]
    for c, f in values:
        joined = torch.cat([c, f], depths.dim() - 1)
        index = order.reshape(order.shape + (1,) * (joined.dim() - order.dim())).expand_as(joined)
        out.append(joined.gather(depths.dim() - 1, index))
    return out
