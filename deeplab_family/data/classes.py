"""Class names and label tables for the datasets the builders know."""

import numpy as np

from deeplab_family.data.schema import IGNORE_LABEL

# PASCAL VOC 2012: index 0 is background, 1..20 the object classes, 255 the void border.
VOC_CLASSES = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
VOC_NUM_CLASSES = len(VOC_CLASSES)

# Cityscapes, from the official table (cityscapesScripts, helpers/labels.py):
# (name, id, trainId, color). ids are what gtFine/*_labelIds.png hold; trainIds are the 19
# evaluated classes, 255 = ignored. 'license plate' has id -1 and never appears in a labelIds
# PNG, so it is left out here.
CITYSCAPES_LABELS = (
    ("unlabeled", 0, IGNORE_LABEL, (0, 0, 0)),
    ("ego vehicle", 1, IGNORE_LABEL, (0, 0, 0)),
    ("rectification border", 2, IGNORE_LABEL, (0, 0, 0)),
    ("out of roi", 3, IGNORE_LABEL, (0, 0, 0)),
    ("static", 4, IGNORE_LABEL, (0, 0, 0)),
    ("dynamic", 5, IGNORE_LABEL, (111, 74, 0)),
    ("ground", 6, IGNORE_LABEL, (81, 0, 81)),
    ("road", 7, 0, (128, 64, 128)),
    ("sidewalk", 8, 1, (244, 35, 232)),
    ("parking", 9, IGNORE_LABEL, (250, 170, 160)),
    ("rail track", 10, IGNORE_LABEL, (230, 150, 140)),
    ("building", 11, 2, (70, 70, 70)),
    ("wall", 12, 3, (102, 102, 156)),
    ("fence", 13, 4, (190, 153, 153)),
    ("guard rail", 14, IGNORE_LABEL, (180, 165, 180)),
    ("bridge", 15, IGNORE_LABEL, (150, 100, 100)),
    ("tunnel", 16, IGNORE_LABEL, (150, 120, 90)),
    ("pole", 17, 5, (153, 153, 153)),
    ("polegroup", 18, IGNORE_LABEL, (153, 153, 153)),
    ("traffic light", 19, 6, (250, 170, 30)),
    ("traffic sign", 20, 7, (220, 220, 0)),
    ("vegetation", 21, 8, (107, 142, 35)),
    ("terrain", 22, 9, (152, 251, 152)),
    ("sky", 23, 10, (70, 130, 180)),
    ("person", 24, 11, (220, 20, 60)),
    ("rider", 25, 12, (255, 0, 0)),
    ("car", 26, 13, (0, 0, 142)),
    ("truck", 27, 14, (0, 0, 70)),
    ("bus", 28, 15, (0, 60, 100)),
    ("caravan", 29, IGNORE_LABEL, (0, 0, 90)),
    ("trailer", 30, IGNORE_LABEL, (0, 0, 110)),
    ("train", 31, 16, (0, 80, 100)),
    ("motorcycle", 32, 17, (0, 0, 230)),
    ("bicycle", 33, 18, (119, 11, 32)),
)

CITYSCAPES_CLASSES = tuple(
    name
    for name, _, train_id, _ in sorted(CITYSCAPES_LABELS, key=lambda r: r[2])
    if train_id != IGNORE_LABEL
)
CITYSCAPES_NUM_CLASSES = len(CITYSCAPES_CLASSES)  # 19
CITYSCAPES_MAX_LABEL_ID = max(label_id for _, label_id, _, _ in CITYSCAPES_LABELS)  # 33


def cityscapes_id_to_train_id():
    """A 256-entry uint8 lookup table from Cityscapes label ids to train ids (255 = ignore).

    Entries above 33 are also 255; the builder rejects such ids before using the table.
    """
    table = np.full(256, IGNORE_LABEL, dtype=np.uint8)
    for _, label_id, train_id, _ in CITYSCAPES_LABELS:
        table[label_id] = train_id
    return table


def cityscapes_colormap():
    """``(256, 3)`` uint8 colours indexed by train id; 255 and unused entries are black."""
    cmap = np.zeros((256, 3), dtype=np.uint8)
    for _, _, train_id, color in CITYSCAPES_LABELS:
        if train_id != IGNORE_LABEL:
            cmap[train_id] = color
    return cmap
