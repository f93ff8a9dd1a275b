"""Plots for the ``report/`` folder of an exported bundle.

Every ``plot_*`` function takes plain numpy arrays (never torch tensors, so this module stays
importable without torch), writes exactly one PNG to ``path`` (creating parent folders) and
returns that path.

Figures are built from :class:`matplotlib.figure.Figure` directly instead of through
``matplotlib.pyplot``: pyplot keeps a global registry of open figures and picks a GUI backend,
both of which leak memory or fail on headless training machines, and neither is needed to write
a file.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from bundle.arrays import Float64Array

__all__ = [
    "plot_latent_space",
    "plot_loss_curves",
    "plot_reconstructions",
    "plot_samples",
    "plot_score_histogram",
    "plot_unit_inputs",
    "unit_preferred_inputs",
]

ImageShape = tuple[int, int, int]

_DPI = 100
_GRID_COLUMNS = 8
_MAX_TABULAR_ITEMS = 6
# Heat maps with more rows than this turn into unreadable stripes, so they are truncated.
_MAX_HEATMAP_ROWS = 64
# Past 8x8 tiles a sample grid only shrinks each image without showing anything new.
_MAX_GRID_ITEMS = 64
# A histogram is switched to log-spaced bins when max/min exceeds this (three decades).
_LOG_SPAN = 1e3


# --------------------------------------------------------------------------------------------
# shared helpers
# --------------------------------------------------------------------------------------------


def _save(fig: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=_DPI, format="png")
    return path


def _as_float_2d(array: npt.ArrayLike, name: str) -> Float64Array:
    arr = np.asarray(array, dtype=np.float64)
    if arr.ndim == 0:
        raise ValueError(f"{name} must have at least one dimension, got a scalar")
    if arr.ndim == 1:
        # A 1-D array is read as N items of one feature rather than one item of N features,
        # because callers pass per-item vectors (latents with d=1, scores, ...).
        return arr.reshape(-1, 1)
    return arr.reshape(arr.shape[0], -1)


def _as_images(array: npt.ArrayLike, image_shape: ImageShape, name: str) -> Float64Array:
    arr = np.asarray(array, dtype=np.float64)
    c, h, w = image_shape
    if arr.ndim == 0 or arr.size % (c * h * w) != 0 or arr[0].size != c * h * w:
        raise ValueError(
            f"{name} with shape {arr.shape} cannot be viewed as images of shape {image_shape}"
        )
    return arr.reshape(arr.shape[0], c, h, w)


def _minmax(x: Float64Array) -> Float64Array:
    lo, hi = float(np.nanmin(x)), float(np.nanmax(x))
    if not math.isfinite(lo) or not math.isfinite(hi) or hi <= lo:
        # A constant (or all-NaN) image has no contrast to stretch; mid-grey reads as "flat".
        return np.full_like(x, 0.5)
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0)


def _channels_side_by_side(img: Float64Array) -> Float64Array:
    """(C, H, W) -> (H, C*W): used when C is neither 1 nor 3 and so has no natural colour."""
    c, h, w = img.shape
    return img.transpose(1, 0, 2).reshape(h, c * w)


def _display_tile(img: Float64Array, *, signed: bool) -> Float64Array:
    """Map one (C, H, W) image to an RGB tile (H, W', 3) with values in [0, 1].

    ``signed`` keeps 0 at mid-grey and scales by the largest magnitude (for weights);
    otherwise the image is min-max stretched on its own (for data, whatever its normalisation).
    """
    if signed:
        peak = float(np.max(np.abs(img))) if img.size else 0.0
        # An all-zero unit must still render (as flat grey) rather than divide by zero.
        peak = peak if peak > 0 and math.isfinite(peak) else 1.0
        scaled = np.clip(0.5 + img / (2.0 * peak), 0.0, 1.0)
    else:
        scaled = _minmax(img)
    if img.shape[0] == 3:
        return scaled.transpose(1, 2, 0)
    plane = scaled[0] if img.shape[0] == 1 else _channels_side_by_side(scaled)
    return np.repeat(plane[:, :, np.newaxis], 3, axis=2)


def _mosaic(tiles: list[Float64Array], cols: int) -> tuple[Float64Array, int]:
    """Pack equally sized RGB tiles row-major into one image; returns it and the pad width.

    One ``imshow`` of a mosaic renders an order of magnitude faster than one axes per tile,
    which matters for 64-unit grids on slow CPU training machines.
    """
    h, w, _ = tiles[0].shape
    pad = max(1, round(max(h, w) / 10))
    rows = math.ceil(len(tiles) / cols)
    # White gutters separate tiles even when the tiles themselves are mid-grey.
    canvas = np.ones((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), dtype=np.float64)
    for k, tile in enumerate(tiles):
        r, c = divmod(k, cols)
        top, left = pad + r * (h + pad), pad + c * (w + pad)
        canvas[top : top + h, left : left + w] = tile
    return canvas, pad


def _mosaic_figure(
    canvas: Float64Array, title: str, row_labels: list[tuple[float, str]] | None = None
) -> Figure:
    height_px, width_px, _ = canvas.shape
    # Small tiles (8x8 digits) are upscaled so that single pixels stay visible.
    width_in = min(12.0, max(5.0, width_px / 25))
    height_in = min(16.0, max(2.0, width_in * height_px / width_px)) + 0.6
    fig = Figure(figsize=(width_in, height_in), layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(canvas, interpolation="nearest")
    ax.set_xticks([])
    if row_labels:
        ax.set_yticks([y for y, _ in row_labels], [label for _, label in row_labels])
        ax.tick_params(axis="y", length=0)
    else:
        ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title(title)
    return fig


def _grid_columns(n: int) -> int:
    return max(1, min(n, _GRID_COLUMNS))


def _empty_figure(path: Path, title: str, message: str) -> Path:
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    ax.set_title(title)
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()
    return _save(fig, path)


# --------------------------------------------------------------------------------------------
# training curves
# --------------------------------------------------------------------------------------------


def _series(history: list[dict[str, float]], key: str) -> Float64Array:
    return np.array([float(h.get(key, np.nan)) for h in history], dtype=np.float64)


def _has(series: Float64Array) -> bool:
    return bool(np.isfinite(series).any())


def plot_loss_curves(
    history: list[dict[str, float]],
    path: Path,
    *,
    refit_history: list[dict[str, float]] | None = None,
) -> Path:
    """Plot per-epoch losses.

    Left panel: ``train_loss`` and ``val_loss``, and the ``train_loss`` of `refit_history`
    when the served model was trained again on every row (training.refit). Right panel (only
    when any of ``train_recon``/``train_kl``/``val_recon``/``val_kl``/``kl_weight`` is
    present): the reconstruction and KL parts, with ``kl_weight`` on a secondary axis. The
    epoch with the lowest ``val_loss`` is marked in every panel. Keys missing in some epochs
    leave gaps.
    """
    title = "Training curves"
    if not history:
        return _empty_figure(path, title, "no epochs recorded")

    epochs = np.array(
        [float(h.get("epoch", i + 1)) for i, h in enumerate(history)], dtype=np.float64
    )
    train_loss, val_loss = _series(history, "train_loss"), _series(history, "val_loss")
    parts = {
        key: _series(history, key) for key in ("train_recon", "train_kl", "val_recon", "val_kl")
    }
    kl_weight = _series(history, "kl_weight")
    show_parts = any(_has(s) for s in parts.values()) or _has(kl_weight)

    best_epoch: float | None = None
    if _has(val_loss):
        best_epoch = float(epochs[int(np.nanargmin(val_loss))])

    fig = Figure(figsize=(12 if show_parts else 7, 4.5), layout="constrained")
    axes: list[Axes] = list(fig.subplots(1, 2 if show_parts else 1, squeeze=False)[0])

    ax = axes[0]
    if _has(train_loss):
        ax.plot(epochs, train_loss, marker=".", label="train loss")
    if _has(val_loss):
        ax.plot(epochs, val_loss, marker=".", label="val loss")
    refit_loss = _series(refit_history or [], "train_loss")
    if _has(refit_loss):
        assert refit_history is not None
        refit_epochs = np.array(
            [float(h.get("epoch", i + 1)) for i, h in enumerate(refit_history)], dtype=np.float64
        )
        ax.plot(refit_epochs, refit_loss, color="C2", label="train loss, refit on every row")
    _maybe_log_y(ax, np.concatenate([train_loss, val_loss, refit_loss]))
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title("Total loss")

    ax_beta: Axes | None = None
    if show_parts:
        ax_parts = axes[1]
        styles = {
            "train_recon": ("C0", "-"),
            "val_recon": ("C0", "--"),
            "train_kl": ("C3", "-"),
            "val_kl": ("C3", "--"),
        }
        for key, values in parts.items():
            if _has(values):
                colour, style = styles[key]
                ax_parts.plot(epochs, values, color=colour, linestyle=style, marker=".", label=key)
        _maybe_log_y(ax_parts, np.concatenate(list(parts.values())))
        ax_parts.set_xlabel("epoch")
        ax_parts.set_ylabel("loss term")
        ax_parts.set_title("Reconstruction and KL terms")
        if _has(kl_weight):
            # The KL weight lives around [0, 1] while the terms can be in the thousands, so it
            # gets its own axis instead of being flattened against the bottom of the panel.
            ax_beta = ax_parts.twinx()
            ax_beta.plot(epochs, kl_weight, color="grey", linestyle=":", label="kl_weight")
            ax_beta.set_ylabel("KL weight")

    for panel in axes:
        if best_epoch is not None:
            panel.axvline(
                best_epoch,
                color="black",
                linestyle="-.",
                linewidth=1,
                label=f"best val (epoch {best_epoch:g})",
            )
        panel.grid(alpha=0.3)
        panel.xaxis.set_major_locator(MaxNLocator(integer=True))
        handles, labels = panel.get_legend_handles_labels()
        if ax_beta is not None and panel is axes[-1]:
            # A twin axis keeps its own artists; merge them so one legend describes the panel.
            beta_handles, beta_labels = ax_beta.get_legend_handles_labels()
            handles, labels = handles + beta_handles, labels + beta_labels
        if handles:
            panel.legend(handles, labels, loc="best", fontsize="small")
    fig.suptitle(title)
    return _save(fig, path)


def _maybe_log_y(ax: Axes, values: Float64Array) -> None:
    finite = values[np.isfinite(values)]
    # The first epochs of a VAE often sit orders of magnitude above the plateau; a log axis keeps
    # the plateau readable. It is only possible when every value is positive (Gaussian
    # likelihood losses can go negative).
    if finite.size and float(finite.min()) > 0 and float(finite.max() / finite.min()) > 100:
        ax.set_yscale("log")


# --------------------------------------------------------------------------------------------
# reconstructions and samples
# --------------------------------------------------------------------------------------------


def plot_reconstructions(
    inputs: npt.NDArray[Any],
    reconstructions: npt.NDArray[Any],
    path: Path,
    *,
    image_shape: ImageShape | None,
    max_items: int = 16,
) -> Path:
    """Show inputs next to their reconstructions.

    With ``image_shape`` (C, H, W) the items are drawn as a grid of row pairs, inputs above and
    reconstructions below; each image is min-max scaled on its own so that contrast survives
    whatever normalisation the data had. Without it (tabular data) up to six items are drawn
    as feature value against feature index, input and reconstruction overlaid.
    """
    n = min(len(inputs), len(reconstructions), max(1, max_items))
    if len(inputs) != len(reconstructions):
        raise ValueError(
            f"inputs ({len(inputs)}) and reconstructions ({len(reconstructions)}) differ in length"
        )
    if n == 0 or len(inputs) == 0:
        return _empty_figure(path, "Reconstructions", "no items")

    if image_shape is not None:
        x = _as_images(inputs[:n], image_shape, "inputs")
        r = _as_images(reconstructions[:n], image_shape, "reconstructions")
        cols = _grid_columns(n)
        tiles: list[Float64Array] = []
        # Each chunk of ``cols`` items becomes an input row followed by its reconstruction row.
        for start in range(0, n, cols):
            stop = min(start + cols, n)
            blank = np.ones_like(_display_tile(x[0], signed=False))
            row_in = [_display_tile(img, signed=False) for img in x[start:stop]]
            row_out = [_display_tile(img, signed=False) for img in r[start:stop]]
            filler = [blank] * (cols - (stop - start))
            tiles += row_in + filler + row_out + filler
        canvas, pad = _mosaic(tiles, cols)
        tile_h = x.shape[2]
        row_labels = [
            (pad + k * (tile_h + pad) + tile_h / 2, "input" if k % 2 == 0 else "recon")
            for k in range(len(tiles) // cols)
        ]
        fig = _mosaic_figure(canvas, "Inputs and their reconstructions", row_labels)
        return _save(fig, path)

    n = min(n, _MAX_TABULAR_ITEMS)
    x2 = _as_float_2d(inputs[:n], "inputs")
    r2 = _as_float_2d(reconstructions[:n], "reconstructions")
    if x2.shape != r2.shape:
        raise ValueError(f"inputs {x2.shape} and reconstructions {r2.shape} differ in shape")
    features = np.arange(x2.shape[1])
    # Markers make individual features identifiable; past ~50 they only add clutter.
    marker = "o" if x2.shape[1] <= 50 else None
    # Two columns keep six items to a landscape-ish page instead of a tall strip.
    cols = 1 if n <= 3 else 2
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(6 * cols, 1.8 * rows + 0.8), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True)
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.set_axis_off()
            continue
        mse = float(np.mean((x2[i] - r2[i]) ** 2))
        ax.plot(features, x2[i], marker=marker, markersize=3, label="input")
        ax.plot(features, r2[i], marker=marker, markersize=3, linestyle="--", label="recon")
        ax.set_title(f"item {i}: MSE {mse:.4g}", fontsize="small")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(loc="best", fontsize="small")
    for ax in axes[-1]:
        ax.set_xlabel("feature index")
    fig.suptitle("Inputs and reconstructions")
    return _save(fig, path)


def plot_samples(
    samples: npt.NDArray[Any],
    path: Path,
    *,
    image_shape: ImageShape | None,
    title: str = "Samples from N(0, I)",
) -> Path:
    """Show decoded samples: an image grid, or for tabular data a heat map plus a scatter.

    The tabular scatter of the first two features (a histogram when there is only one) shows
    whether samples spread over a plausible range, which a heat map hides.
    """
    if len(samples) == 0:
        return _empty_figure(path, title, "no samples")

    if image_shape is not None:
        imgs = _as_images(samples[:_MAX_GRID_ITEMS], image_shape, "samples")
        n = len(imgs)
        canvas, _ = _mosaic([_display_tile(img, signed=False) for img in imgs], _grid_columns(n))
        suffix = f" (first {n} of {len(samples)})" if n < len(samples) else ""
        fig = _mosaic_figure(canvas, title + suffix)
        return _save(fig, path)

    data = _as_float_2d(samples, "samples")
    shown = data[:_MAX_HEATMAP_ROWS]
    fig = Figure(figsize=(12, 5), layout="constrained")
    ax_heat, ax_scatter = fig.subplots(1, 2, width_ratios=[3, 2])
    image = ax_heat.imshow(shown, aspect="auto", cmap="viridis", interpolation="nearest")
    fig.colorbar(image, ax=ax_heat, label="value")
    ax_heat.set_xlabel("feature index")
    ax_heat.set_ylabel("sample")
    suffix = f" (first {len(shown)} of {len(data)})" if len(shown) < len(data) else ""
    ax_heat.set_title(f"Sample values{suffix}")
    if data.shape[1] >= 2:
        ax_scatter.scatter(data[:, 0], data[:, 1], s=10, alpha=0.6)
        ax_scatter.set_xlabel("feature 0")
        ax_scatter.set_ylabel("feature 1")
        ax_scatter.set_title("First two features")
    else:
        ax_scatter.hist(data[:, 0], bins=min(30, max(5, len(data) // 2)))
        ax_scatter.set_xlabel("feature 0")
        ax_scatter.set_ylabel("count")
        ax_scatter.set_title("Feature 0")
    ax_scatter.grid(alpha=0.3)
    fig.suptitle(title)
    return _save(fig, path)


# --------------------------------------------------------------------------------------------
# latent space
# --------------------------------------------------------------------------------------------


def _project_2d(latents: Float64Array) -> tuple[Float64Array, str, str, str]:
    """Return (N, 2) coordinates, the two axis labels and the projection's name."""
    n, d = latents.shape
    if d == 1:
        # A deterministic jitter spreads overlapping points vertically without making the
        # plot change from run to run.
        jitter = np.random.default_rng(0).uniform(-1.0, 1.0, size=n)
        return np.column_stack([latents[:, 0], jitter]), "z1", "jitter (no meaning)", "z1 only"
    if d == 2:
        return latents, "z1", "z2", "raw latent (d=2)"
    total_var = float(latents.var(axis=0).sum()) if n > 1 else 0.0
    if n < 2 or not total_var > 0:
        # PCA is undefined for one point or zero variance (sklearn would divide by zero).
        return latents[:, :2], "z1", "z2", f"first 2 of {d} dims (PCA undefined)"
    from sklearn.decomposition import PCA  # deferred: sklearn adds ~1 s to module import

    pca = PCA(n_components=2)
    coords = np.asarray(pca.fit_transform(latents), dtype=np.float64)
    ratio = np.asarray(pca.explained_variance_ratio_, dtype=np.float64)
    return (
        coords,
        f"PC1 ({100 * ratio[0]:.1f}% var)",
        f"PC2 ({100 * ratio[1]:.1f}% var)",
        f"PCA of {d}-D latent",
    )


def _label_name(value: Any, label_names: list[str] | None) -> str:
    if label_names is not None:
        try:
            index = int(value)
        except (TypeError, ValueError):
            index = -1
        if 0 <= index < len(label_names) and index == value:
            return label_names[index]
    return str(value)


def plot_latent_space(
    latents: npt.NDArray[Any],
    path: Path,
    *,
    labels: npt.NDArray[Any] | None = None,
    label_names: list[str] | None = None,
    is_anomaly: npt.NDArray[Any] | None = None,
) -> Path:
    """Scatter the latent codes in 2-D, coloured by label, anomalies marked with red crosses.

    d > 2 is projected with PCA (axes show the explained variance), d == 2 is drawn as is and
    d == 1 is drawn against a fixed jitter. ``label_names[k]`` names integer label ``k``.
    """
    z = _as_float_2d(latents, "latents")
    n = len(z)
    if labels is not None and len(labels) != n:
        raise ValueError(f"labels has {len(labels)} entries for {n} latents")
    if is_anomaly is not None and len(is_anomaly) != n:
        raise ValueError(f"is_anomaly has {len(is_anomaly)} entries for {n} latents")
    if n == 0:
        return _empty_figure(path, "Latent space", "no latents")
    if z.shape[1] == 0:
        raise ValueError("latents have zero dimensions")

    coords, x_label, y_label, projection = _project_2d(z)
    fig = Figure(figsize=(7.5, 6), layout="constrained")
    ax = fig.add_subplot()
    point_size = 14 if n <= 2000 else 4

    if labels is None:
        ax.scatter(coords[:, 0], coords[:, 1], s=point_size, alpha=0.6, color="C0", label="data")
    else:
        classes, codes = np.unique(np.asarray(labels), return_inverse=True)
        codes = codes.reshape(-1)
        if len(classes) <= 20:
            palette = colormaps["tab10" if len(classes) <= 10 else "tab20"]
            for k, cls in enumerate(classes):
                mask = codes == k
                ax.scatter(
                    coords[mask, 0],
                    coords[mask, 1],
                    s=point_size,
                    alpha=0.7,
                    color=palette(k),
                    label=f"{_label_name(cls, label_names)} (n={int(mask.sum())})",
                )
        else:
            # Past 20 classes no legend or qualitative palette stays readable; fall back to a
            # continuous colour bar over the class index.
            points = ax.scatter(
                coords[:, 0], coords[:, 1], s=point_size, alpha=0.7, c=codes, cmap="viridis"
            )
            fig.colorbar(points, ax=ax, label="class index")

    if is_anomaly is not None:
        flagged = np.asarray(is_anomaly, dtype=bool).reshape(-1)
        if flagged.any():
            # Drawn last so anomalies stay visible on top of dense normal clusters.
            ax.scatter(
                coords[flagged, 0],
                coords[flagged, 1],
                s=max(30, 2 * point_size),
                marker="x",
                color="red",
                linewidths=1.2,
                label=f"anomaly (n={int(flagged.sum())})",
                zorder=3,
            )

    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize="small", markerscale=1.5)
    if z.shape[1] == 1:
        ax.set_yticks([])
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.set_title(f"Latent space: {projection}, N={n}")
    ax.grid(alpha=0.3)
    return _save(fig, path)


# --------------------------------------------------------------------------------------------
# anomaly scores
# --------------------------------------------------------------------------------------------


def plot_score_histogram(
    scores: npt.NDArray[Any],
    threshold: float,
    path: Path,
    *,
    is_anomaly: npt.NDArray[Any] | None = None,
    score_type: str = "score",
) -> Path:
    """Histogram of anomaly scores with the decision threshold marked.

    With ``is_anomaly`` the normal and anomalous items are drawn as two translucent histograms
    on the same bins. Bins are log-spaced (with a log x-axis) when every score is positive and
    they span more than three decades, since reconstruction-error scores are long-tailed.
    Non-finite scores are dropped and counted in the title.
    """
    values = np.asarray(scores, dtype=np.float64).reshape(-1)
    flags = None
    if is_anomaly is not None:
        flags = np.asarray(is_anomaly, dtype=bool).reshape(-1)
        if flags.shape != values.shape:
            raise ValueError(f"is_anomaly has {flags.size} entries for {values.size} scores")
    finite = np.isfinite(values)
    dropped = int((~finite).sum())
    values = values[finite]
    if flags is not None:
        flags = flags[finite]
    title = f"Distribution of {score_type}"
    if values.size == 0:
        return _empty_figure(path, title, "no finite scores")

    lo, hi = float(values.min()), float(values.max())
    n_bins = int(np.clip(round(math.sqrt(values.size)), 10, 60))
    threshold_ok = math.isfinite(threshold)
    use_log = lo > 0 and hi / lo > _LOG_SPAN and (not threshold_ok or threshold > 0)
    if use_log:
        edges = np.geomspace(lo, hi, n_bins + 1)
    else:
        # np.histogram_bin_edges widens a zero-width range by +-0.5, so constant scores and a
        # single score still get valid bins.
        edges = np.histogram_bin_edges(values, bins=n_bins)
    bins: list[float] = edges.tolist()

    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.add_subplot()
    if flags is None:
        ax.hist(values, bins=bins, alpha=0.75, color="C0", label=f"all (n={values.size})")
    else:
        normal, anomalous = values[~flags], values[flags]
        if normal.size:
            ax.hist(normal, bins=bins, alpha=0.6, color="C0", label=f"normal (n={normal.size})")
        if anomalous.size:
            ax.hist(
                anomalous, bins=bins, alpha=0.6, color="C3", label=f"anomalous (n={anomalous.size})"
            )
    if use_log:
        ax.set_xscale("log")
    if threshold_ok:
        above = int((values > threshold).sum())
        ax.axvline(
            threshold,
            color="black",
            linestyle="--",
            linewidth=1.5,
            label=f"threshold = {threshold:.4g} ({above}/{values.size} above)",
        )
    ax.set_xlabel(score_type + (" (log scale)" if use_log else ""))
    ax.set_ylabel("count")
    if dropped:
        title += f" ({dropped} non-finite dropped)"
    ax.set_title(title)
    ax.legend(loc="best", fontsize="small")
    ax.grid(alpha=0.3)
    return _save(fig, path)


# --------------------------------------------------------------------------------------------
# first-layer units
# --------------------------------------------------------------------------------------------


def unit_preferred_inputs(weights: npt.NDArray[Any]) -> Float64Array:
    """Norm-bounded input that maximally activates each first-layer hidden unit.

    For unit ``i`` with pre-activation ``W_i . x`` (bias ignored) and the constraint
    ``||x||_2 <= 1``, Cauchy-Schwarz gives the maximiser ``x_j = W_ij / ||W_i||_2`` with
    activation ``||W_i||_2``. This is the visualisation from Andrew Ng, "Sparse autoencoder",
    CS294A lecture notes, Stanford University (2011), section "Visualizing a trained
    autoencoder".

    Args:
        weights: (H, D) first-layer weight matrix in torch ``Linear`` convention (out x in).

    Returns:
        (H, D) float64 array; row ``i`` is unit ``i``'s preferred input. Rows of an all-zero
        unit are zeros (any unit vector maximises it equally; zeros avoid NaN).
    """
    W = np.asarray(weights, dtype=np.float64)
    if W.ndim != 2:
        raise ValueError(f"weights must be 2-D (H, D), got shape {W.shape}")
    norms = np.linalg.norm(W, axis=1, keepdims=True)
    out = np.zeros_like(W)
    np.divide(W, norms, out=out, where=norms > 0)
    return out


def plot_unit_inputs(
    weights: npt.NDArray[Any],
    path: Path,
    *,
    image_shape: ImageShape | None,
    max_units: int = 64,
) -> Path:
    """Draw each first-layer unit's preferred input (see :func:`unit_preferred_inputs`).

    With ``image_shape`` (C, H, W) every unit is an image on a grey scale centred on zero and
    scaled per unit. This also covers conv first layers: pass the kernels flattened to
    (out_channels, C*kh*kw) with ``image_shape=(C, kh, kw)``. Without it, a units x features
    heat map on a diverging colour map.
    """
    preferred = unit_preferred_inputs(weights)
    total_units, d = preferred.shape
    shown = preferred[: max(1, max_units)]
    n = len(shown)
    title = f"Preferred inputs of first-layer units ({n} of {total_units})"
    if n == 0:
        return _empty_figure(path, title, "no units")

    if image_shape is not None:
        c, h, w = image_shape
        if c * h * w != d:
            raise ValueError(
                f"weights have {d} inputs, image_shape {image_shape} needs {c * h * w}"
            )
        imgs = shown.reshape(n, c, h, w)
        cols = max(1, math.ceil(math.sqrt(n)))
        canvas, _ = _mosaic([_display_tile(img, signed=True) for img in imgs], cols)
        fig = _mosaic_figure(canvas, title)
        return _save(fig, path)

    # Rows are unit-norm already, so one symmetric scale for the whole map is comparable.
    peak = float(np.max(np.abs(shown))) or 1.0
    fig = Figure(figsize=(10, min(12.0, 2.0 + 0.15 * n)), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(
        shown, aspect="auto", cmap="RdBu_r", vmin=-peak, vmax=peak, interpolation="nearest"
    )
    fig.colorbar(image, ax=ax, label="weight / ||W_i||")
    ax.set_xlabel("input feature")
    ax.set_ylabel("hidden unit")
    ax.set_title(title)
    return _save(fig, path)
