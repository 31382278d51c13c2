"""``make_grid``: SRN's forward pass tiles its normal maps into a grid for its tensorboard log
(``srns.py``, ``custom_layers.py``); ``save_image`` is imported by ObSuRF's visualisation
code, which the bench never runs."""
import math

import torch


def make_grid(tensor, nrow: int = 8, padding: int = 2, normalize: bool = False, value_range=None,
              scale_each: bool = False, pad_value: float = 0.0):
    """Images [B, C, H, W] (or a list of [C, H, W]) tiled ``nrow`` to a row into one image
    [C, H', W'], ``padding`` pixels of ``pad_value`` between them; ``normalize`` maps each
    image (``scale_each``) or all of them to [0, 1] by their min and max (or ``value_range``).
    Written from torchvision's documented behaviour."""
    if isinstance(tensor, (list, tuple)):
        tensor = torch.stack(list(tensor))
    if tensor.dim() == 2:
        tensor = tensor[None]
    if tensor.dim() == 3:
        if tensor.shape[0] == 1:
            tensor = tensor.expand(3, -1, -1)
        tensor = tensor[None]
    if tensor.dim() == 4 and tensor.shape[1] == 1:
        tensor = tensor.expand(-1, 3, -1, -1)
    if normalize:
        tensor = tensor.clone()

        def rescale(image):
            low, high = value_range if value_range is not None else (float(image.min()), float(image.max()))
            image.clamp_(min=low, max=high).sub_(low).div_(max(high - low, 1e-5))
        for image in (tensor if scale_each else [tensor]):
            rescale(image)
    if tensor.shape[0] == 1:
        return tensor.squeeze(0)
    count, channels, height, width = tensor.shape
    columns = min(nrow, count)
    rows = math.ceil(count / columns)
    step_y, step_x = height + padding, width + padding
    grid = tensor.new_full((channels, step_y * rows + padding, step_x * columns + padding), pad_value)
    for k in range(count):
        y, x = divmod(k, columns)
        grid[:, y * step_y + padding:(y + 1) * step_y, x * step_x + padding:(x + 1) * step_x] = tensor[k]
    return grid


def save_image(*args, **kwargs):
    raise NotImplementedError("the bench's torchvision stand-in does not save images")
