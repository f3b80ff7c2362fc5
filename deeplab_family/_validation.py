"""Argument checks shared by the whole package (the shape of Keras'
`keras/src/utils/argument_validation.py`).

Every check takes the argument's `name` and its `value`, returns the value in canonical form
(an int pair as a tuple, a sequence as a tuple) and raises `ValueError` in the Keras form,
naming what is allowed and what was received:

    >>> positive_int("filters", 0)
    Traceback (most recent call last):
    ...
    ValueError: filters must be an int >= 1. Received: filters=0

Config sections add where the value came from once, in `models.registry.dataclass_from_dict`
(`model.head.filters must be ...`), so the checks here never spell a section out.

This module imports nothing outside the standard library: the TFRecord builders, which run
without TensorFlow, use it too (`argparse_type`).
"""

import argparse
import math


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _as_tuple(value):
    if isinstance(value, (str, bytes)):
        return None
    try:
        return tuple(value)
    except TypeError:
        return None


def positive_int(name, value, minimum=1):
    """An int >= `minimum` (bools are refused)."""
    if not _is_int(value) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}. Received: {name}={value!r}")
    return value


def int_in_range(name, value, low, high):
    """An int in `low..high`, both included."""
    if not _is_int(value) or not low <= value <= high:
        raise ValueError(f"{name} must be an int in {low}..{high}. Received: {name}={value!r}")
    return value


def optional_positive_int(name, value, minimum=1):
    """None, or an int >= `minimum`."""
    if value is not None and (not _is_int(value) or value < minimum):
        raise ValueError(
            f"{name} must be None or an int >= {minimum}. Received: {name}={value!r}"
        )
    return value


def int_pair(name, value, minimum=1):
    """An int or a pair of ints, each >= `minimum`, returned as a tuple of two ints."""
    pair = (value, value) if _is_int(value) else _as_tuple(value)
    if pair is None or len(pair) != 2 or any(not _is_int(v) or v < minimum for v in pair):
        raise ValueError(
            f"{name} must be an int >= {minimum} or a pair of them. Received: {name}={value!r}"
        )
    return pair


def int_tuple(name, value, *, length=None, minimum=None, allow_none=False, allow_empty=True):
    """A sequence of ints (a tuple comes back); optionally of a fixed `length`, each >=
    `minimum`. None is refused unless `allow_none`."""
    if value is None and allow_none:
        return None
    values = _as_tuple(value)
    ok = values is not None and all(_is_int(v) for v in values)
    ok = ok and (length is None or len(values) == length) and (allow_empty or len(values) > 0)
    ok = ok and (minimum is None or all(v >= minimum for v in values))
    if not ok:
        what = f"{length} ints" if length is not None else (
            "a sequence of ints" if allow_empty else "a non-empty sequence of ints")
        if minimum is not None:
            what += f" >= {minimum}"
        raise ValueError(f"{name} must be {what}. Received: {name}={value!r}")
    return values


def rates(name, value):
    """A sequence of atrous rates: ints >= 1 (possibly empty)."""
    return int_tuple(name, value, minimum=1)


def odd_int(name, value):
    """An odd int >= 1: a kernel whose "same" padding is centred (an even one is off-centre by
    half a pixel)."""
    if not _is_int(value) or value < 1 or value % 2 == 0:
        raise ValueError(f"{name} must be an odd int >= 1. Received: {name}={value!r}")
    return value


def odd_ints(name, value):
    """A non-empty sequence of odd ints >= 1."""
    values = _as_tuple(value)
    if not values or any(not _is_int(k) or k < 1 or k % 2 == 0 for k in values):
        raise ValueError(
            f"{name} must be a non-empty sequence of odd ints >= 1. Received: {name}={value!r}"
        )
    return values


def one_of(name, value, allowed):
    """`value` if it is one of `allowed` (listed in the message in the order given; a set,
    sorted)."""
    if value not in allowed:
        listed = sorted(allowed) if isinstance(allowed, (set, frozenset)) else list(allowed)
        raise ValueError(f"{name} must be one of {listed}. Received: {name}={value!r}")
    return value


def boolean(name, value):
    """A bool (YAML's true/false), not a string or a number."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be a bool. Received: {name}={value!r}")
    return value


def probability(name, value, *, include_one=False):
    """A number in [0, 1), or [0, 1] with `include_one` (a dropout rate, a loss fraction)."""
    ok = _is_number(value) and 0.0 <= value and (value <= 1.0 if include_one else value < 1.0)
    if not ok:
        interval = "[0, 1]" if include_one else "[0, 1)"
        raise ValueError(f"{name} must be a float in {interval}. Received: {name}={value!r}")
    return value


def positive_number(name, value, *, allow_zero=False):
    """A finite number > 0 (>= 0 with `allow_zero`)."""
    ok = _is_number(value) and math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        raise ValueError(
            f"{name} must be a number {'>= 0' if allow_zero else '> 0'}. Received: {name}={value!r}"
        )
    return value


def explained(check, name, value, message, **kwargs):
    """`check(name, value, **kwargs)`, a check of this module, raising `message`
    (the rule in the paper's terms, and so the fix) plus "Received: name=value" instead of the
    check's own words. The check decides what is valid; the head dataclass says why.

    >>> explained(odd_int, "k", 2, "k must be an odd int (3 or 1 in Table 3).")
    Traceback (most recent call last):
    ...
    ValueError: k must be an odd int (3 or 1 in Table 3). Received: k=2
    """
    try:
        return check(name, value, **kwargs)
    except ValueError:
        raise ValueError(f"{message} Received: {name}={value!r}") from None


def require(condition, message):
    """Raises `ValueError(message)` unless `condition`: for cross-field rules whose message
    explains the rule and the fix."""
    if not condition:
        raise ValueError(message)


def argparse_type(check, convert=int, **kwargs):
    """An argparse `type=` from a check: `--num-shards 0` exits with
    `argument --num-shards: must be an int >= 1. Received: 0`.

    >>> parse = argparse_type(positive_int)
    >>> parse("8")
    8
    """

    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            value = text
        try:
            return check("value", value, **kwargs)
        except ValueError as e:
            message = str(e).replace("value must", "must", 1).replace("value=", "", 1)
            raise argparse.ArgumentTypeError(message) from None

    parse.__name__ = getattr(check, "__name__", "value")
    return parse
