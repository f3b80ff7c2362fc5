"""The "poly" learning rate with an optional linear warm-up (DeepLabv3 Sec 4.1, PAN Sec 4)."""

import keras
import tensorflow as tf

from deeplab_family._validation import positive_int, positive_number, require


@keras.saving.register_keras_serializable(package="deeplab_family")
class PolyWithWarmup(keras.optimizers.schedules.LearningRateSchedule):
    """`lr * (1 - step / max_steps) ** power`, after an optional linear warm-up.

    The poly policy of DeepLabv3 Sec 4.1 ("the initial learning rate is multiplied by
    (1 - iter / max_iter) ** power with power = 0.9") and PAN Sec 4, decaying to
    `end_learning_rate` at `max_steps` (research/deeplab's `end_learning_rate`, 0 by default):
    `(lr - end) * (1 - step / max_steps) ** power + end`. During the first `warmup_steps` steps
    the rate grows linearly from 0 to the poly value at `warmup_steps`, so it is continuous
    (Model Garden's `PolynomialWarmUp` in spirit; the papers use no warm-up, the default).
    Beyond `max_steps` the rate stays at `end_learning_rate`.

    Args:
        learning_rate: float > 0. The base rate (0.007 for DeepLabv3 stage 1, 4e-3 for PAN).
        max_steps: int >= 1. Where the poly reaches `end_learning_rate`.
        power: float. The poly exponent (0.9).
        end_learning_rate: float >= 0.
        warmup_steps: int in [0, max_steps).

    Example:

    >>> schedule = PolyWithWarmup(0.007, 30000)
    >>> float(schedule(15000))  # 0.007 * 0.5 ** 0.9
    0.0037512...
    """

    def __init__(self, learning_rate, max_steps, power=0.9, end_learning_rate=0.0,
                 warmup_steps=0):
        positive_number("learning_rate", learning_rate)
        positive_int("max_steps", max_steps)
        require(
            0 <= end_learning_rate <= learning_rate,
            "end_learning_rate must be in [0, learning_rate]. Received: "
            f"end_learning_rate={end_learning_rate!r}, learning_rate={learning_rate!r}",
        )
        require(
            0 <= warmup_steps < max_steps,
            f"warmup_steps must be in [0, max_steps). Received: warmup_steps={warmup_steps!r}, "
            f"max_steps={max_steps!r}",
        )
        self.learning_rate = float(learning_rate)
        self.max_steps = max_steps
        self.power = float(power)
        self.end_learning_rate = float(end_learning_rate)
        self.warmup_steps = int(warmup_steps)

    def _poly(self, step):
        fraction = tf.minimum(step, float(self.max_steps)) / float(self.max_steps)
        decay = (self.learning_rate - self.end_learning_rate) * (1.0 - fraction) ** self.power
        return decay + self.end_learning_rate

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        rate = self._poly(step)
        if self.warmup_steps:
            warm = self._poly(float(self.warmup_steps)) * step / float(self.warmup_steps)
            rate = tf.where(step < self.warmup_steps, warm, rate)
        return rate

    def get_config(self):
        return {
            "learning_rate": self.learning_rate,
            "max_steps": self.max_steps,
            "power": self.power,
            "end_learning_rate": self.end_learning_rate,
            "warmup_steps": self.warmup_steps,
        }

    @classmethod
    def from_training_config(cls, training):
        """From a `config.TrainingConfig`."""
        return cls(
            training.learning_rate,
            training.steps,
            power=training.poly_power,
            end_learning_rate=training.end_learning_rate,
            warmup_steps=training.warmup_steps,
        )
