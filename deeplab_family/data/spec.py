"""`DatasetSpec`: what a dataset's masks mean, written once in a YAML file.

    name: my_dataset
    classes: [background, road, car, person, tree]
    palette: [[0, 0, 0], [128, 64, 128], [0, 0, 142], [220, 20, 60], [107, 142, 35]]
    ignore_label: 255          # the raw mask value meaning "not labelled"
    encoding: index            # index: PNGs of class ids; color: RGB PNGs in the palette
    ignore_color: [224, 224, 192]   # color masks: the colour meaning "not labelled"
    label_map: {7: 1, 26: 2}   # optional, index masks: raw id -> class id (or 255)
    label_map_default: 255     # raw ids absent from the map: a class id, 255, or null (error)
    reduce_zero_label: false   # index masks: 0 -> ignore and k -> k-1 (ADE20K; mmseg's name)

- **classes / palette**: class ``i`` is named ``classes[i]`` and drawn in ``palette[i]``
  (RGB 0..255), in TensorBoard, in `predict`'s masks and overlays, and in colour masks. The
  palette has exactly one colour per class; for colour masks no two classes (nor
  ``ignore_color``) may share one (index masks may: ADE20K's palette does).
- **encoding**: ``index`` masks are single-channel PNGs (mode ``L``) or palette PNGs (mode
  ``P``, whose indices are read as they are, never their colours: VOC's ``SegmentationClass``).
  ``color`` masks are RGB PNGs in which every pixel has a palette colour (or ``ignore_color``);
  any other colour is an error that names the file, the colour and its pixel count.
- **ignore_label**: the raw mask value (index masks) that means "not labelled". The shards always
  store 255 for it (`schema.IGNORE_LABEL`), the value the losses and metrics skip.
- **label_map** (index masks): raw value -> class id, applied after ``reduce_zero_label``.
  Cityscapes' ``*_labelIds.png`` hold 34 ids of which 19 are trained; COCO category ids map to
  VOC classes. Without a map, a raw value is the class id.

Builders (`tfrecords_tools`) write the spec into each split's ``<split>-manifest.json``
(``"dataset_spec"``); training, evaluation, TensorBoard, `predict` and the export read it back
from there (`spec_for_pattern`), so the names and colours travel with the data. VOC,
Cityscapes, ADE20K and COCO-as-VOC ship as specs like any other (``deeplab_family/data/specs/``).

TensorFlow-free: the builders' worker processes import it.

Example:

>>> from deeplab_family.data.spec import load_spec
>>> voc = load_spec("voc")
>>> voc.num_classes, voc.classes[15], voc.palette[15]
(21, 'person', (192, 128, 128))
>>> int(voc.lookup_table()[0]), int(voc.lookup_table()[255])   # raw value -> stored value
(0, 255)
"""

import dataclasses
import glob
import json
import os
from collections.abc import Mapping, Sequence

import numpy as np
import yaml

from deeplab_family import _files
from deeplab_family.data import schema

ENCODINGS = ("index", "color")
SPEC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "specs")
MANIFEST_KEY = "dataset_spec"
# Stored labels are 8-bit: class ids 0..254, 255 for ignore.
MAX_CLASSES = schema.IGNORE_LABEL


class SpecError(ValueError):
    """A dataset spec that cannot be used; the message names the file and the problem."""


def _colour(value, where):
    try:
        rgb = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        rgb = ()
    if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb) or any(
        isinstance(v, bool) or (isinstance(v, float) and v != int(v)) for v in value
    ):
        raise SpecError(f"{where} must be three integers in 0..255 (R, G, B). Received: {value!r}")
    return rgb


def _int(value, where, low=0, high=255):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not (
        low <= value <= high
    ):
        raise SpecError(f"{where} must be an integer in {low}..{high}. Received: {value!r}")
    return int(value)


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """A dataset's classes, colours and mask encoding (see the module docstring for the YAML).

    Args:
        name: str. A short name, recorded in manifests and reports.
        classes: sequence of str. The class names; class id ``i`` is ``classes[i]``.
        palette: sequence of (R, G, B). One colour per class.
        ignore_label: int. The raw mask value meaning "not labelled" (stored as 255).
        encoding: ``"index"`` or ``"color"``.
        ignore_color: (R, G, B) or None. ``color`` masks: the colour meaning "not labelled";
            also how ignored pixels are drawn (black when None).
        label_map: mapping or None. ``index`` masks: raw value -> class id or 255.
        label_map_default: int or None. ``index`` masks with a ``label_map``: the class id (or
            255) of raw values the map does not name; None makes such a value an error.
        reduce_zero_label: bool. ``index`` masks: raw 0 -> ignore, ``k`` -> ``k - 1`` (ADE20K).
        description: str. Free text: where the data comes from, the conventions applied.
        source: str. Where the spec was read from (for messages); not part of its value.

    Raises:
        SpecError: the message names ``source`` and the problem (duplicate colours, a palette
            shorter or longer than the classes, ...).
    """

    name: str
    classes: Sequence[str]
    palette: Sequence[Sequence[int]]
    ignore_label: int = schema.IGNORE_LABEL
    encoding: str = "index"
    ignore_color: Sequence[int] | None = None
    label_map: Mapping[int, int] | None = None
    label_map_default: int | None = None
    reduce_zero_label: bool = False
    description: str = ""
    source: str = dataclasses.field(default="", compare=False)

    def __post_init__(self):
        where = f"dataset spec {self.source}" if self.source else "dataset spec"
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen dataclass)
        if not isinstance(self.name, str) or not self.name.strip():
            raise SpecError(f"{where}: name must be a non-empty string. Received: {self.name!r}")
        if isinstance(self.classes, str) or not isinstance(self.classes, Sequence):
            raise SpecError(f"{where}: classes must be a list of names. "
                            f"Received: {self.classes!r}")
        classes = tuple(str(c) for c in self.classes)
        if not classes:
            raise SpecError(f"{where}: classes is empty")
        if len(classes) > MAX_CLASSES:
            raise SpecError(f"{where}: {len(classes)} classes; at most {MAX_CLASSES} fit the "
                            "8-bit labels (255 is ignore)")
        seen = {}
        for i, c in enumerate(classes):
            if c in seen:
                raise SpecError(f"{where}: class name {c!r} is given twice (classes {seen[c]} "
                                f"and {i})")
            seen[c] = i
        set_("classes", classes)
        if isinstance(self.palette, str) or not isinstance(self.palette, Sequence):
            raise SpecError(f"{where}: palette must be a list of [R, G, B]. "
                            f"Received: {self.palette!r}")
        if len(self.palette) != len(classes):
            shorter = "shorter" if len(self.palette) < len(classes) else "longer"
            raise SpecError(
                f"{where}: the palette has {len(self.palette)} colours for {len(classes)} "
                f"classes ({shorter} than the classes); give one colour per class, in order")
        palette = tuple(_colour(c, f"{where}: palette[{i}] ({classes[i]})")
                        for i, c in enumerate(self.palette))
        set_("palette", palette)
        set_("ignore_label", _int(self.ignore_label, f"{where}: ignore_label"))
        if self.encoding not in ENCODINGS:
            raise SpecError(f"{where}: encoding must be one of {', '.join(ENCODINGS)}. "
                            f"Received: {self.encoding!r}")
        if self.ignore_color is not None:
            set_("ignore_color", _colour(self.ignore_color, f"{where}: ignore_color"))
        if self.encoding == "color":
            named = {}
            for i, rgb in enumerate(palette):
                if rgb in named:
                    raise SpecError(
                        f"{where}: classes {named[rgb]} ({classes[named[rgb]]}) and {i} "
                        f"({classes[i]}) have the same colour {list(rgb)}; colour masks need "
                        "one colour per class")
                named[rgb] = i
            if self.ignore_color is not None and self.ignore_color in named:
                i = named[self.ignore_color]
                raise SpecError(f"{where}: ignore_color {list(self.ignore_color)} is also the "
                                f"colour of class {i} ({classes[i]})")
            if self.label_map or self.reduce_zero_label:
                raise SpecError(f"{where}: label_map and reduce_zero_label apply to index "
                                "masks; colour masks map through the palette")
        if self.label_map is not None:
            if not isinstance(self.label_map, Mapping):
                raise SpecError(f"{where}: label_map must be a mapping raw id -> class id. "
                                f"Received: {self.label_map!r}")
            table = {}
            if schema.IGNORE_LABEL in {_as_int(k) for k in self.label_map}:
                raise SpecError(f"{where}: label_map maps raw {schema.IGNORE_LABEL}, which is "
                                "always ignore; leave it out of the map")
            for raw, train in self.label_map.items():
                raw_i = _int(_as_int(raw), f"{where}: label_map key {raw!r}")
                table[raw_i] = self._class_or_ignore(train, f"{where}: label_map[{raw!r}]")
            set_("label_map", dict(sorted(table.items())))
        if self.label_map_default is not None:
            if self.label_map is None:
                raise SpecError(f"{where}: label_map_default needs a label_map")
            set_("label_map_default", self._class_or_ignore(
                self.label_map_default, f"{where}: label_map_default"))
        if not isinstance(self.reduce_zero_label, bool):
            raise SpecError(f"{where}: reduce_zero_label must be true or false. "
                            f"Received: {self.reduce_zero_label!r}")
        if self.label_map is None and self.encoding == "index":
            # Without a map every raw value below the class count is a class; ignore_label
            # must not be one of them.
            top = len(classes) if not self.reduce_zero_label else len(classes) + 1
            if self.ignore_label < top and not (self.reduce_zero_label and
                                                self.ignore_label == 0):
                raise SpecError(
                    f"{where}: ignore_label {self.ignore_label} is also a class id "
                    f"(0..{len(classes) - 1}); use a value outside the classes, or a label_map")

    def _class_or_ignore(self, value, where):
        value = _int(_as_int(value), where)
        if value >= len(self.classes) and value != schema.IGNORE_LABEL:
            raise SpecError(f"{where} is {value}: not a class id (0..{len(self.classes) - 1}) "
                            f"nor {schema.IGNORE_LABEL} (ignore)")
        return value

    @property
    def num_classes(self):
        return len(self.classes)

    def lookup_table(self):
        """``index`` masks: a 256-entry int16 table raw value -> stored value.

        Stored values are class ids or 255 (ignore); -1 marks a raw value that is an error
        (a value outside the classes, or absent from the ``label_map`` without a default).
        """
        raw = np.arange(256)
        if self.reduce_zero_label:
            value = np.where(raw == 0, schema.IGNORE_LABEL, raw - 1)
            value[raw == schema.IGNORE_LABEL] = schema.IGNORE_LABEL  # 255 stays ignore
        else:
            value = raw.copy()
        if self.label_map is not None:
            default = -1 if self.label_map_default is None else self.label_map_default
            mapped = np.full(256, default)
            for k, v in self.label_map.items():
                mapped[k] = v
            value = np.where(value == schema.IGNORE_LABEL, schema.IGNORE_LABEL,
                             mapped[np.clip(value, 0, 255)])
        value = np.where(raw == self.ignore_label, schema.IGNORE_LABEL, value)
        value = np.where((value >= self.num_classes) & (value != schema.IGNORE_LABEL), -1, value)
        return value.astype(np.int16)

    def colormap(self):
        """``(256, 3)`` uint8 colours indexed by stored label: the palette, and the ignore
        colour (black when none) at 255; other entries are black."""
        cmap = np.zeros((256, 3), dtype=np.uint8)
        cmap[: self.num_classes] = np.asarray(self.palette, np.uint8)
        if self.ignore_color is not None:
            cmap[schema.IGNORE_LABEL] = self.ignore_color
        return cmap

    def class_ids(self, names_or_ids, what="classes"):
        """Class ids of a list of names or ids; an unknown one is an error naming the spec."""
        ids = []
        for item in names_or_ids:
            if isinstance(item, str) and item in self.classes:
                ids.append(self.classes.index(item))
            elif isinstance(item, (int, np.integer)) and not isinstance(item, bool) and (
                0 <= item < self.num_classes
            ):
                ids.append(int(item))
            else:
                raise SpecError(
                    f"{what}: {item!r} is not a class of dataset {self.name!r} "
                    f"({self.source or 'its spec'}); classes: {', '.join(self.classes)}")
        return ids

    def to_dict(self):
        """The YAML/JSON form (without ``source``); ``from_dict`` reads it back equal."""
        out = {
            "name": self.name,
            "classes": list(self.classes),
            "palette": [list(c) for c in self.palette],
            "ignore_label": self.ignore_label,
            "encoding": self.encoding,
        }
        if self.ignore_color is not None:
            out["ignore_color"] = list(self.ignore_color)
        if self.label_map is not None:
            out["label_map"] = {int(k): int(v) for k, v in self.label_map.items()}
        if self.label_map_default is not None:
            out["label_map_default"] = self.label_map_default
        if self.reduce_zero_label:
            out["reduce_zero_label"] = True
        if self.description:
            out["description"] = self.description
        return out

    @classmethod
    def from_dict(cls, values, source=""):
        where = f"dataset spec {source}" if source else "dataset spec"
        if not isinstance(values, Mapping):
            raise SpecError(f"{where} must be a mapping of keys. Received: {type(values).__name__}")
        allowed = [f.name for f in dataclasses.fields(cls) if f.name != "source"]
        unknown = sorted(set(values) - set(allowed))
        if unknown:
            raise SpecError(f"{where}: unknown key(s) {unknown}; allowed: {allowed}")
        missing = [k for k in ("name", "classes", "palette") if k not in values]
        if missing:
            raise SpecError(f"{where}: missing key(s) {missing}")
        return cls(**values, source=source)


def _as_int(value):
    """YAML/JSON keys arrive as ints or digit strings (JSON has string keys only)."""
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return value


def builtin_specs():
    """The names of the specs that ship with the package (``voc``, ``cityscapes``, ...)."""
    return sorted(os.path.splitext(f)[0] for f in os.listdir(SPEC_DIR) if f.endswith(".yaml"))


def load_spec(name_or_path):
    """A `DatasetSpec` from a YAML file, or the built-in spec of that name.

    Raises:
        SpecError: no such file or built-in, unreadable YAML, or an invalid spec (the message
            names the file).
    """
    if isinstance(name_or_path, DatasetSpec):
        return name_or_path
    text = str(name_or_path)
    path = text
    # A bare name is a built-in spec even beside a data folder of that name (`voc/`).
    if not os.path.isfile(path) and os.sep not in text and not text.endswith((".yaml", ".yml")):
        path = os.path.join(SPEC_DIR, text + ".yaml")
        if not os.path.exists(path):
            raise SpecError(f"no dataset spec {text!r}: neither a file nor a built-in spec "
                            f"({', '.join(builtin_specs())})")
    try:
        with open(path) as f:
            values = yaml.safe_load(f)
    except FileNotFoundError:
        raise SpecError(f"no dataset spec file {path}") from None
    except (OSError, yaml.YAMLError) as e:
        raise SpecError(f"cannot read dataset spec {path}: {e}") from None
    return DatasetSpec.from_dict(values, source=path)


def manifests_for_files(files):
    """``{manifest path: manifest}`` of the builder manifests that list any of ``files``, in the
    order of the first file each lists.

    Unreadable or foreign JSON files are passed over (shards from another tool have none).
    """
    files = [os.path.abspath(f) for f in files]
    owner = {}
    for directory in dict.fromkeys(os.path.dirname(f) for f in files):
        for path in sorted(glob.glob(os.path.join(glob.escape(directory),
                                                  schema.manifest_name("*")))):
            try:
                with open(path) as f:
                    manifest = json.load(f)
                shards = [os.path.join(directory, s["file"]) for s in manifest["shards"]]
            except (OSError, ValueError, KeyError, TypeError):
                continue
            for shard in shards:
                owner.setdefault(shard, (path, manifest))
    found = {}
    for f in files:
        if f in owner:
            path, manifest = owner[f]
            found.setdefault(path, manifest)
    return found


def count_examples(file_pattern):
    """The number of examples in the shards a glob (or list of globs) matches, from the
    builders' manifests (each shard's count); None when a matched file is in no manifest
    (shards from another tool) or nothing matches."""
    patterns = [file_pattern] if isinstance(file_pattern, str) else list(file_pattern or ())
    files = list(dict.fromkeys(os.path.abspath(f) for p in patterns if p
                               for f in sorted(glob.glob(p))))
    if not files:
        return None
    counts = {}
    for path, manifest in manifests_for_files(files).items():
        directory = os.path.dirname(path)
        try:
            for shard in manifest["shards"]:
                counts[os.path.join(directory, shard["file"])] = int(shard["count"])
        except (KeyError, TypeError, ValueError):
            continue  # foreign JSON: no total, never an error
    if not all(f in counts for f in files):
        return None
    return sum(counts[f] for f in files)


def spec_for_files(files):
    """The `DatasetSpec` recorded in the manifests of these shard files, or None.

    Several manifests (splits, or sources mixed in training) must agree on the classes; their
    names and colours may differ (COCO-as-VOC beside VOC), and the first one's are used.

    Raises:
        SpecError: two manifests disagree on the classes (the message names both).
    """
    first = first_path = None
    for path, manifest in manifests_for_files(files).items():
        values = manifest.get(MANIFEST_KEY)
        if values is None:
            continue
        spec = DatasetSpec.from_dict(values, source=path)
        if first is None:
            first, first_path = spec, path
        elif spec.classes != first.classes:
            raise SpecError(
                f"the shards mix datasets with other classes: {first_path} has "
                f"{first.num_classes} ({first.name}: {', '.join(first.classes[:4])}, ...) and "
                f"{path} has {spec.num_classes} ({spec.name}: {', '.join(spec.classes[:4])}, ...)")
    return first


def spec_for_pattern(file_pattern):
    """`spec_for_files` of the shards a glob (or list of globs) matches; None when none match
    or none has a spec in its manifest."""
    patterns = [file_pattern] if isinstance(file_pattern, str) else list(file_pattern or ())
    files = [f for p in patterns if p for f in sorted(glob.glob(p))]
    return spec_for_files(list(dict.fromkeys(files))) if files else None


def check_num_classes(num_classes, spec, what="model.num_classes"):
    """Raises a ValueError naming both when the model's class count is not the spec's."""
    if spec is not None and num_classes != spec.num_classes:
        raise ValueError(
            f"{what}={num_classes} but the dataset {spec.name!r} has {spec.num_classes} classes "
            f"({spec.source or 'its spec'}); set {what}: {spec.num_classes}, or point the data "
            "at shards of the dataset the model is for")


SPEC_FILENAME = "dataset_spec.yaml"  # in a model dir, written by training


def experiment_spec(config, model_dir=None, prefer="train"):
    """The dataset spec of an experiment, or None when nothing names one.

    Looked for, in this order (``prefer="eval"`` puts ``eval_data`` first): the manifests of
    the ``train_data`` shards, those of the ``eval_data`` shards, ``<model_dir>/dataset_spec.yaml``
    (which training writes, so that evaluation and export find it once the shards are gone)
    and ``evaluation.dataset`` (a built-in spec name or a YAML path: for shards of other
    tools; it is only read when neither the shards nor the model dir have a spec). The first
    one found is used; the shards' and the model dir's must have the same classes.

    Raises:
        SpecError: two of them disagree on the classes (the message names both).
    """
    sections = [("train_data", config.train_data), ("eval_data", config.eval_data)]
    if prefer == "eval":
        sections.reverse()
    found = []
    for name, section in sections:
        if section is not None:
            spec = spec_for_pattern(section.all_patterns)
            if spec is not None:
                found.append((f"the {name} manifests", spec))
    if model_dir is not None and os.path.exists(os.path.join(model_dir, SPEC_FILENAME)):
        found.append(("the model dir", load_spec(os.path.join(model_dir, SPEC_FILENAME))))
    named = getattr(getattr(config, "evaluation", None), "dataset", None)
    if named and not found:
        found.append(("evaluation.dataset", load_spec(named)))
    if not found:
        return None
    (where, spec), rest = found[0], found[1:]
    for other_where, other in rest:
        if other.classes != spec.classes:
            raise SpecError(
                f"the dataset of {where} ({spec.name}, {spec.num_classes} classes, "
                f"{spec.source}) is not the one of {other_where} ({other.name}, "
                f"{other.num_classes} classes, {other.source}): train, evaluate and name the "
                "classes with one dataset")
    return spec


def save_spec(spec, model_dir):
    """Writes ``<model_dir>/dataset_spec.yaml``; returns its path."""
    return _files.write_yaml(os.path.join(model_dir, SPEC_FILENAME), spec.to_dict())
