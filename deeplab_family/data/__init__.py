"""Data: the TFRecord schema, class tables, the VOC palette and the tf.data input pipeline.

``schema``, ``palette``, ``classes`` and ``config`` (``InputConfig``) are free of TensorFlow (the
TFRecord builders and the experiment config import them). ``make_dataset`` is imported on first
use, which loads TensorFlow.
"""

from deeplab_family.data import classes, palette, schema
from deeplab_family.data.config import InputConfig

__all__ = ["InputConfig", "classes", "make_dataset", "palette", "schema"]


def __getattr__(name):
    if name == "make_dataset":
        from deeplab_family.data import pipeline

        return pipeline.make_dataset
    raise AttributeError(f"module 'deeplab_family.data' has no attribute {name!r}")
