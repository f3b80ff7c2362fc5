"""A synthetic dataset in the real PASCAL VOC 2012 + SBD directory layout.

    python -m tfrecords_tools.synthetic --output-dir DIR [--num-train 300 --num-val 100 --seed 0]

writes::

    DIR/VOCdevkit/VOC2012/JPEGImages/<id>.jpg
                          SegmentationClass/<id>.png      palette PNGs, VOC colour map, 255 border
                          ImageSets/Segmentation/{train,val,trainval}.txt
    DIR/benchmark_RELEASE/dataset/img/<id>.jpg
                                  cls/<id>.mat            GTcls: Boundaries, Segmentation,
                                                          CategoriesPresent (no 255, as SBD)
                                  {train,val}.txt

so that the demo and the tests run the real builder (``python -m tfrecords_tools.voc``) on it.
The lists overlap the way the real ones do:

- 40% of the training ids are VOC train ids; a quarter of those are also in SBD train, with an
  SBD annotation that differs from VOC's (no void border), so "VOC labels win" is visible;
- the other 60% exist only in SBD (its train and val lists), image and ``.mat`` only;
- every fifth VOC val id is also in SBD train: train_aug must leave it out.

So ``train_aug`` has exactly ``num_train`` ids and ``val`` has ``num_val``.

Each image (sizes around 500x375, some portrait) has a textured background and 1-4 objects of
the 20 classes. A class fixes the shape, the colour (with jitter) and the texture (flat, stripes,
checks or dots, with a class-dependent period and angle), so a tiny model learns the classes on a
CPU in minutes; occlusion, jitter and cluttered backgrounds keep it from being trivial.
Everything is deterministic by seed: the same seed gives byte-identical files.
"""

import argparse
import colorsys
import io
import os
import sys

import numpy as np
import scipy.io
import scipy.ndimage
import scipy.sparse
from PIL import Image

from deeplab_family import _validation
from deeplab_family.data import classes, palette, schema
from tfrecords_tools import cli
from tfrecords_tools.progress import image_progress

NUM_OBJECT_CLASSES = classes.VOC_NUM_CLASSES - 1  # 20
SHAPES = (
    "ellipse",
    "rectangle",
    "triangle",
    "diamond",
    "ring",
    "cross",
    "star",
    "hexagon",
    "half_disc",
    "crescent",
)
TEXTURES = ("flat", "stripes", "checks", "dots")
BORDER_WIDTH = 5  # VOC's void band around objects is about 5 px wide
_MAT_HEADER = b"MATLAB 5.0 MAT-file, written by tfrecords_tools.synthetic"


def class_style(class_index):
    """The fixed look of an object class (1..20): shape, base colour (RGB 0..1), texture.

    Classes sharing a shape differ in colour and texture; classes sharing a texture differ in
    shape; hues are spread so that neighbours in index are far apart in colour.
    """
    k = class_index - 1
    hue = ((k * 7) % NUM_OBJECT_CLASSES) / NUM_OBJECT_CLASSES
    saturation = 0.55 + 0.35 * ((k * 3) % 4) / 3
    value = 0.6 + 0.35 * ((k * 5) % 3) / 2
    return {
        "shape": SHAPES[k % len(SHAPES)],
        "color": colorsys.hsv_to_rgb(hue, saturation, value),
        "texture": TEXTURES[(k // 2 + k) % len(TEXTURES)],
        "period": 5 + (k % 5) * 2,  # texture period in pixels
        "angle": (k * 37 % 180) * np.pi / 180,
    }


def _shape_mask(shape, u, v, aspect):
    """Inside-mask of a unit-size shape in rotated, normalised coordinates ``(u, v)``."""
    u = u / aspect
    r2 = u * u + v * v
    if shape == "ellipse":
        return r2 < 1.0
    if shape == "rectangle":
        return (np.abs(u) < 0.9) & (np.abs(v) < 0.7)
    if shape == "triangle":
        return (v < 0.6) & (v > -1.0 + 1.9 * np.abs(u))
    if shape == "diamond":
        return np.abs(u) + np.abs(v) < 1.0
    if shape == "ring":
        return (r2 < 1.0) & (r2 > 0.45)
    if shape == "cross":
        return ((np.abs(u) < 0.3) & (np.abs(v) < 1.0)) | ((np.abs(v) < 0.3) & (np.abs(u) < 1.0))
    if shape == "star":
        theta = np.arctan2(v, u)
        return np.sqrt(r2) < 0.55 + 0.45 * np.cos(5 * theta) ** 2
    if shape == "hexagon":
        au, av = np.abs(u), np.abs(v)
        return (av < 0.85) & (0.5 * av + 0.866 * au < 0.85)
    if shape == "half_disc":
        return (r2 < 1.0) & (v > -0.15)
    if shape == "crescent":
        return (r2 < 1.0) & ((u - 0.45) ** 2 + v * v > 0.55)
    raise ValueError(f"unknown shape {shape!r}")


def _texture(texture, x, y, period, angle):
    """A brightness modulation in about -1..1 over image coordinates."""
    if texture == "flat":
        return np.zeros_like(x)
    along = x * np.cos(angle) + y * np.sin(angle)
    if texture == "stripes":
        return np.sign(np.sin(2 * np.pi * along / period))
    across = -x * np.sin(angle) + y * np.cos(angle)
    if texture == "checks":
        return np.sign(np.sin(np.pi * along / period) * np.sin(np.pi * across / period))
    if texture == "dots":
        spots = np.cos(2 * np.pi * along / period) * np.cos(2 * np.pi * across / period)
        return np.where(spots > 0.5, 1.0, -0.3)
    raise ValueError(f"unknown texture {texture!r}")


def _smooth_noise(rng, height, width, cells):
    """Bilinearly upsampled uniform noise in 0..1: large soft blotches."""
    grid = rng.random((cells[0], cells[1]), dtype=np.float32)
    return np.asarray(Image.fromarray(grid).resize((width, height), Image.BILINEAR))


def _background(rng, height, width):
    """A muted colour field with soft blotches, faint stripes, grain and unlabelled clutter."""
    base = np.array(
        colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.0, 0.25), rng.uniform(0.35, 0.8)),
        np.float32,
    )
    rgb = np.empty((height, width, 3), dtype=np.float32)
    brightness = 0.6 + 0.8 * _smooth_noise(rng, height, width, (4, 5))
    for c in range(3):
        tint = 0.85 + 0.3 * _smooth_noise(rng, height, width, (3, 4))
        rgb[..., c] = base[c] * brightness * tint
    y = np.arange(height, dtype=np.float32)[:, None]
    x = np.arange(width, dtype=np.float32)[None, :]
    if rng.random() < 0.5:  # faint large-scale stripes
        period, angle = rng.uniform(20, 60), rng.uniform(0, np.pi)
        phase = (x * np.cos(angle) + y * np.sin(angle)) * (2 * np.pi / period)
        rgb *= (1 + 0.08 * np.sin(phase))[..., None]
    for _ in range(rng.integers(0, 4)):  # grey blobs that are background, not objects
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        ry, rx = rng.uniform(10, 60), rng.uniform(10, 60)
        y0, y1 = int(max(0, cy - ry)), int(min(height, cy + ry + 1))
        x0, x1 = int(max(0, cx - rx)), int(min(width, cx + rx + 1))
        blob = ((y[y0:y1] - cy) / ry) ** 2 + ((x[:, x0:x1] - cx) / rx) ** 2 < 1
        region = rgb[y0:y1, x0:x1]
        region[blob] = region[blob] * 0.5 + rng.uniform(0.2, 0.7)
    rgb += rng.standard_normal(rgb.shape, dtype=np.float32) * 0.03
    return rgb


def render_sample(rng, image_size=(375, 500)):
    """One image (uint8 RGB) and its label (uint8 class indices, no border yet)."""
    nominal_h, nominal_w = image_size
    if rng.random() < 0.25:  # portrait, as about a quarter of VOC is
        nominal_h, nominal_w = nominal_w, nominal_h
    height = max(8, round(nominal_h * rng.uniform(0.8, 1.0)))
    width = max(8, round(nominal_w * rng.uniform(0.8, 1.0)))
    rgb = _background(rng, height, width)
    label = np.zeros((height, width), dtype=np.uint8)
    num_objects = int(rng.integers(1, 5))
    side = min(height, width)
    for _ in range(num_objects):
        cls = int(rng.integers(1, NUM_OBJECT_CLASSES + 1))
        style = class_style(cls)
        radius = side * rng.uniform(0.12, 0.32)
        cy, cx = rng.uniform(0.15, 0.85) * height, rng.uniform(0.15, 0.85) * width
        y0, y1 = max(0, int(cy - radius * 1.5)), min(height, int(cy + radius * 1.5) + 1)
        x0, x1 = max(0, int(cx - radius * 1.5)), min(width, int(cx + radius * 1.5) + 1)
        if y1 <= y0 or x1 <= x0:
            continue
        y, x = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        rot = rng.uniform(0, 2 * np.pi)
        du, dv = (x - cx) / radius, (y - cy) / radius
        u = du * np.cos(rot) + dv * np.sin(rot)
        v = -du * np.sin(rot) + dv * np.cos(rot)
        mask = _shape_mask(style["shape"], u, v, rng.uniform(0.75, 1.25))
        if mask.sum() < 16:
            continue
        color = np.array(style["color"], dtype=np.float32)
        color = np.clip(color * rng.uniform(0.85, 1.15) + rng.normal(0, 0.04, 3), 0, 1)
        shade = 1 + 0.22 * _texture(style["texture"], x, y, style["period"], style["angle"])
        # a soft light gradient across the object
        shade = shade * (1 + 0.12 * (u * np.cos(rot) + v * np.sin(rot)) / 1.5)
        patch = color[None, None, :] * shade[..., None]
        patch += rng.standard_normal(patch.shape, dtype=np.float32) * 0.025
        region = rgb[y0:y1, x0:x1]
        region[mask] = patch[mask]
        label[y0:y1, x0:x1][mask] = cls
    rgb *= 255
    rgb += 0.5
    image = np.clip(rgb, 0, 255, out=rgb).astype(np.uint8)
    return image, label


def voc_border(label, width=BORDER_WIDTH):
    """The label with a ~``width`` px ignore (255) band on every boundary between values."""
    size = width
    changes = scipy.ndimage.maximum_filter(label, size=size) != scipy.ndimage.minimum_filter(
        label, size=size
    )
    out = label.copy()
    out[changes] = schema.IGNORE_LABEL
    return out


def sbd_struct(label):
    """The ``GTcls`` struct of an SBD ``cls/<id>.mat`` for a label map without 255."""
    height, width = label.shape
    boundaries = np.empty((NUM_OBJECT_CLASSES, 1), dtype=object)
    edge = scipy.ndimage.maximum_filter(label, size=3) != scipy.ndimage.minimum_filter(
        label, size=3
    )
    rows, cols = np.nonzero(edge)
    edge_class = label[rows, cols]
    for k in range(1, NUM_OBJECT_CLASSES + 1):
        on = edge_class == k
        boundaries[k - 1, 0] = scipy.sparse.csc_matrix(
            (np.ones(int(on.sum()), dtype=bool), (rows[on], cols[on])), shape=(height, width)
        )
    present = np.unique(label)
    present = present[present > 0].astype(np.uint8).reshape(-1, 1)
    return {"Boundaries": boundaries, "Segmentation": label, "CategoriesPresent": present}


def encode_jpeg(image, quality=90):
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def encode_palette_png(label):
    """A VOC-style palette PNG (mode P, the VOC colour map) of class indices."""
    label = np.ascontiguousarray(label, dtype=np.uint8)
    image = Image.frombytes("P", (label.shape[1], label.shape[0]), label.tobytes())
    image.putpalette(palette.pil_palette())
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def encode_mat(struct):
    """``scipy.io.savemat`` bytes with a fixed header, so the same seed gives the same bytes."""
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"GTcls": struct}, do_compression=True)
    data = bytearray(buf.getvalue())
    data[:116] = _MAT_HEADER.ljust(116, b" ")  # the default header holds the creation time
    return bytes(data)


def sample_ids(num_train, num_val):
    """The ids and the lists they go to (see the module docstring)."""
    train = [f"synth_{k:06d}" for k in range(num_train)]
    val = [f"synth_{num_train + k:06d}" for k in range(num_val)]
    voc_train, sbd_train, sbd_val, sbd_annotated = [], [], [], set()
    for k, sample_id in enumerate(train):
        group = k % 10
        if group < 4:
            voc_train.append(sample_id)
            if group == 0:  # also annotated by SBD, differently
                sbd_train.append(sample_id)
                sbd_annotated.add(sample_id)
        elif group < 8:
            sbd_train.append(sample_id)
            sbd_annotated.add(sample_id)
        else:
            sbd_val.append(sample_id)
            sbd_annotated.add(sample_id)
    for k, sample_id in enumerate(val):
        if k % 5 == 0:  # a VOC val id that SBD lists for training: train_aug must drop it
            sbd_train.append(sample_id)
            sbd_annotated.add(sample_id)
    return {
        "train": train,
        "val": val,
        "voc_train": voc_train,
        "voc_val": list(val),
        "sbd_train": sorted(sbd_train),
        "sbd_val": sorted(sbd_val),
        "sbd_annotated": sbd_annotated,
    }


def _write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def _write_list(path, ids):
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(f"{i}\n" for i in sorted(ids)))


def generate(output_dir, num_train=300, num_val=100, seed=0, image_size=(375, 500), progress=False):
    """Writes the dataset. Returns ``{"voc_root", "sbd_root", "ids"}``.

    Args:
        output_dir: str. Created if needed.
        num_train: int. Ids in train_aug.
        num_val: int. Ids in VOC val.
        seed: int. The same seed gives byte-identical files.
        image_size: (height, width). The nominal landscape size; each image is 80-100% of it.
        progress: bool. A progress line on stderr.
    """
    _validation.positive_int("num_train", num_train)
    _validation.positive_int("num_val", num_val)
    voc_root = os.path.join(output_dir, "VOCdevkit", "VOC2012")
    sbd_root = os.path.join(output_dir, "benchmark_RELEASE", "dataset")
    for folder in (
        os.path.join(voc_root, "JPEGImages"),
        os.path.join(voc_root, "SegmentationClass"),
        os.path.join(voc_root, "ImageSets", "Segmentation"),
        os.path.join(sbd_root, "img"),
        os.path.join(sbd_root, "cls"),
    ):
        os.makedirs(folder, exist_ok=True)
    ids = sample_ids(num_train, num_val)
    voc_ids = set(ids["voc_train"]) | set(ids["voc_val"])
    all_ids = ids["train"] + ids["val"]
    shown = image_progress(len(all_ids), "synthetic", progress)
    for sample_id in all_ids:
        index = int(sample_id.split("_")[1])
        rng = np.random.default_rng([seed, index])
        image, label = render_sample(rng, image_size)
        jpeg = encode_jpeg(image)
        if sample_id in voc_ids:
            _write(os.path.join(voc_root, "JPEGImages", f"{sample_id}.jpg"), jpeg)
            _write(
                os.path.join(voc_root, "SegmentationClass", f"{sample_id}.png"),
                encode_palette_png(voc_border(label)),
            )
        if sample_id in ids["sbd_annotated"]:
            _write(os.path.join(sbd_root, "img", f"{sample_id}.jpg"), jpeg)
            _write(os.path.join(sbd_root, "cls", f"{sample_id}.mat"), encode_mat(sbd_struct(label)))
        shown.update()
    shown.close()
    lists = os.path.join(voc_root, "ImageSets", "Segmentation")
    _write_list(os.path.join(lists, "train.txt"), ids["voc_train"])
    _write_list(os.path.join(lists, "val.txt"), ids["voc_val"])
    _write_list(os.path.join(lists, "trainval.txt"), ids["voc_train"] + ids["voc_val"])
    _write_list(os.path.join(sbd_root, "train.txt"), ids["sbd_train"])
    _write_list(os.path.join(sbd_root, "val.txt"), ids["sbd_val"])
    return {"voc_root": voc_root, "sbd_root": sbd_root, "ids": ids}


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m tfrecords_tools.synthetic",
        description="Writes a synthetic dataset in the PASCAL VOC 2012 + SBD layout.",
    )
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--num-train", type=cli.positive_int, default=300, help="ids in train_aug")
    parser.add_argument("--num-val", type=cli.positive_int, default=100, help="ids in val")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    out = generate(
        args.output_dir, args.num_train, args.num_val, args.seed, progress=not args.no_progress
    )
    print(f"wrote {args.num_train} train_aug + {args.num_val} val ids under {args.output_dir}")
    print(
        "build the TFRecords with:\n  python -m tfrecords_tools.voc "
        f"--voc-root {out['voc_root']} --sbd-root {out['sbd_root']} --splits train_aug,val "
        f"--output-dir {os.path.join(args.output_dir, 'tfrecords')}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
