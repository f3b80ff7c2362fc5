"""Data: the TFRecord schema, class tables, the VOC palette and the tf.data input pipeline.

``schema``, ``palette`` and ``classes`` are free of TensorFlow (the TFRecord builders import
them). ``InputConfig`` and ``make_dataset`` are imported on first use, which loads TensorFlow.
"""

from deeplab_family.data import classes, palette, schema

__all__ = ["InputConfig", "classes", "make_dataset", "palette", "schema"]


def __getattr__(name):
    if name in ("InputConfig", "make_dataset"):
        from deeplab_family.data import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'deeplab_family.data' has no attribute {name!r}")
