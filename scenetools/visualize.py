"""Turning data into pictures: depth and label colouring, labelled image grids.

Everything returns uint8 RGB arrays [H, W, 3]; no plotting library is needed.
"""
from __future__ import annotations

import colorsys

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Polynomial fit of the Turbo colormap (Mikhailov, Google AI blog 2019): rows r, g, b;
# columns are the coefficients of x^0 .. x^5.
_TURBO = np.array([
    [0.13572138, 4.61539260, -42.66032258, 132.13108234, -152.94239396, 59.28637943],
    [0.09140261, 2.19418839, 4.84296658, -14.18503333, 4.27729857, 2.82956604],
    [0.10667330, 12.64194608, -60.58204836, 110.36276771, -89.90310912, 27.34824973]])
NO_SURFACE_COLOR = np.array([0, 0, 0], np.uint8)  # depth inf (no surface) or 0 (unknown)
WHITE = (255, 255, 255)  # semantic class 0 (background), drawn white as semantic SRN draws it
LEGEND_ROW, SWATCH = 12, 9  # px: one legend entry per row, its colour swatch


def turbo(x: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] to Turbo colours, uint8 [..., 3]."""
    x = np.clip(np.asarray(x, np.float64), 0, 1)[..., None]
    rgb = (x ** np.arange(6)) @ _TURBO.T
    return (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)


def colorize_depth(depth: np.ndarray, near: float | None = None, far: float | None = None) -> np.ndarray:
    """Depth [..., H, W] -> uint8 [..., H, W, 3], coloured by inverse depth (near is red,
    far is blue). The range defaults to the 2nd-98th percentile of the valid values."""
    depth = np.asarray(depth, np.float64)
    valid = np.isfinite(depth) & (depth > 0)
    if near is None or far is None:
        lo, hi = np.percentile(depth[valid], [2, 98]) if valid.any() else (1.0, 2.0)
        near, far = near or lo, far or max(hi, lo * 1.01)
    disparity = np.where(valid, 1.0 / np.where(valid, depth, 1.0), 0.0)
    x = (disparity - 1.0 / far) / (1.0 / near - 1.0 / far)
    return np.where(valid[..., None], turbo(x), NO_SURFACE_COLOR)


def label_palette(count: int, background=(0, 0, 0)) -> np.ndarray:
    """uint8 [count, 3]: ``background`` (an RGB triple, black by default) for 0, then
    well-separated hues, the same for every ``count`` and background."""
    hues = [colorsys.hsv_to_rgb((k * 0.618034) % 1.0, 0.75, 0.95) for k in range(count - 1)]
    colors = (np.array(hues).reshape(-1, 3) * 255 + 0.5).astype(np.uint8)
    return np.concatenate([np.array([background], np.uint8), colors])


def colorize_labels(labels: np.ndarray, count: int | None = None, background=(0, 0, 0)) -> np.ndarray:
    """Integer ids [..., H, W] -> uint8 [..., H, W, 3] with :func:`label_palette`."""
    labels = np.asarray(labels).astype(np.int64)
    count = int(labels.max()) + 1 if count is None else count
    return label_palette(max(count, 1), background)[np.clip(labels, 0, max(count, 1) - 1)]


def legend(names: list, colors: np.ndarray, height: int, pad: int = 3) -> np.ndarray:
    """A legend strip uint8 [height, W, 3] on white: per name a swatch of its colour
    (``colors`` uint8 [N, 3], outlined in grey so white shows) and the name, top to bottom in
    columns of as many rows of :data:`LEGEND_ROW` px as ``height`` holds."""
    rows = max(1, (height - pad) // LEGEND_ROW)
    font = ImageFont.load_default()
    column = SWATCH + 4 + int(max(font.getlength(name) for name in names)) + 2 * pad
    canvas = np.full((height, pad + -(-len(names) // rows) * column, 3), 255, np.uint8)
    texts = []
    for k, (name, color) in enumerate(zip(names, colors)):
        x, y = pad + (k // rows) * column, pad + (k % rows) * LEGEND_ROW
        canvas[y:y + SWATCH, x:x + SWATCH] = 128
        canvas[y + 1:y + SWATCH - 1, x + 1:x + SWATCH - 1] = color
        texts.append((x + SWATCH + 4, y - 2, name))
    return draw_texts(canvas, texts)


def draw_texts(canvas: np.ndarray, texts) -> np.ndarray:
    """uint8 [H, W, 3] ``canvas`` with each (x, y, text) of ``texts`` written at (x, y) in
    black, in PIL's default font."""
    picture = Image.fromarray(canvas)
    draw = ImageDraw.Draw(picture)
    for x, y, text in texts:
        draw.text((x, y), text, fill=(0, 0, 0))
    return np.asarray(picture)


def upscale(image: np.ndarray, min_size: int) -> np.ndarray:
    """Nearest-neighbour upscale by an integer factor until the short side >= min_size."""
    factor = max(1, -(-min_size // min(image.shape[:2])))
    return image.repeat(factor, 0).repeat(factor, 1) if factor > 1 else image


def grid(rows: list, labels: list | None = None, column_titles: list | None = None,
         pad: int = 4, label_width: int = 0, background: int = 255) -> np.ndarray:
    """Lay out rows of equally sized uint8 RGB images into one picture.

    ``labels`` gives a text per row (drawn in a left margin of ``label_width`` px);
    ``column_titles`` a text above each column. Short rows are left blank at the end.
    """
    cell_h, cell_w = rows[0][0].shape[:2]
    columns = max(len(r) for r in rows)
    title_h = 14 if column_titles else 0
    height = title_h + len(rows) * (cell_h + pad) + pad
    width = label_width + columns * (cell_w + pad) + pad
    canvas = np.full((height, width, 3), background, np.uint8)
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            y, x = title_h + pad + r * (cell_h + pad), label_width + pad + c * (cell_w + pad)
            canvas[y:y + cell_h, x:x + cell_w] = image
    texts = [(pad, title_h + pad + r * (cell_h + pad) + cell_h // 2 - 5, text) for r, text in enumerate(labels or [])]
    texts += [(label_width + pad + c * (cell_w + pad), 2, text) for c, text in enumerate(column_titles or [])]
    return draw_texts(canvas, texts)


def contact_sheet(scenes, indices, num_views: int = 5, min_cell: int = 96) -> np.ndarray:
    """A picture of some scenes of a :class:`~scenetools.scenefile.SceneFile`: per scene a
    row of views, then a row for each field the file has (depth, instance, semantic)."""
    rows, labels = [], []
    label_count = {}
    for name in ("instance", "semantic"):
        if name in scenes.fields:
            label_count[name] = max(int(scenes.read_views(i, fields=(name,))[name].max()) for i in indices) + 1
    near_far = scenes.render_range
    for index in indices:
        views = np.arange(min(num_views, int(scenes.view_count[index])))
        data = scenes.read_views(index, views, ("rgb",) + tuple(scenes.fields))
        title = scenes.names[index]
        rows.append(list(data["rgb"]))
        labels.append(title)
        if "depth" in data:
            valid = data["depth"][np.isfinite(data["depth"]) & (data["depth"] > 0)]
            far = float(np.percentile(valid, 98)) if valid.size else (near_far[1] if near_far is not None else 2.0)
            near = float(valid.min()) if valid.size else 1.0
            rows.append(list(colorize_depth(data["depth"], near, max(far, near * 1.01))))
            labels.append("  depth")
        for name, count in label_count.items():
            rows.append(list(colorize_labels(data[name], count)))
            labels.append(f"  {name}")
    rows = [[upscale(image, min_cell) for image in row] for row in rows]
    label_width = 8 + 6 * max(len(text) for text in labels)
    return grid(rows, labels, [f"view {v}" for v in range(num_views)], label_width=label_width)
