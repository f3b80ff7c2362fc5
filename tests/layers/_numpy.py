"""NumPy references shared by the layer tests: a "same" conv and the two bilinear geometries."""

import numpy as np


def np_conv_same(x, w, b=0.0):
    """Stride-1 zero-padded "same" conv, odd kernel. x: (H, W, Cin), w: (kh, kw, Cin, Cout)."""
    kh, kw = w.shape[:2]
    xp = np.pad(x, ((kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    h, wd = x.shape[:2]
    out = np.zeros((h, wd, w.shape[3])) + b
    for i in range(kh):
        for j in range(kw):
            out += np.tensordot(xp[i : i + h, j : j + wd], w[i, j], axes=([2], [0]))
    return out


def _half_pixel_axis(n_in, n_out):
    # tf.image.resize / keras.ops.image.resize, bilinear with half-pixel centres.
    src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    lo_f = np.floor(src)
    lo = np.clip(lo_f, 0, n_in - 1).astype(int)
    hi = np.clip(np.ceil(src), 0, n_in - 1).astype(int)
    return lo, hi, src - lo_f


def _stride_exact_axis(r):
    # Output pixel p reads the source at p / r (corner-aligned, the backbone geometry: pixel i
    # on r * i); the border is held past the last source pixel.
    def axis(n_in, n_out):
        src = np.minimum(np.arange(n_out) / r, n_in - 1)
        lo = np.floor(src).astype(int)
        return lo, np.minimum(lo + 1, n_in - 1), src - lo

    return axis


def _separable_bilinear(x, out_h, out_w, axis):
    lo, hi, t = axis(x.shape[0], out_h)
    x = x[lo] * (1 - t)[:, None, None] + x[hi] * t[:, None, None]
    lo, hi, t = axis(x.shape[1], out_w)
    return x[:, lo] * (1 - t)[None, :, None] + x[:, hi] * t[None, :, None]


def np_resize_half_pixel(x, out_h, out_w):
    """tf.image.resize bilinear (half-pixel centres). x: (H, W, C) -> (out_h, out_w, C)."""
    return _separable_bilinear(x, out_h, out_w, _half_pixel_axis)


def np_resize_stride_exact(x, out_h, out_w, r):
    """`ResizeLike(align_corners=True, stride=r)`. x: (H, W, C) -> (out_h, out_w, C)."""
    return _separable_bilinear(x, out_h, out_w, _stride_exact_axis(r))
