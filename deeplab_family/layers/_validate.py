"""Argument checks shared by the layers: messages say what was received and what is allowed."""


def positive_int(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}. Received: {name}={value!r}")
    return value


def int_pair(name, value, minimum=1):
    """An int or a pair of ints, each >= minimum, returned as a tuple of two ints."""
    pair = (value, value) if isinstance(value, int) and not isinstance(value, bool) else value
    try:
        pair = tuple(pair)
    except TypeError:
        pair = ()
    if len(pair) != 2 or any(
        isinstance(v, bool) or not isinstance(v, int) or v < minimum for v in pair
    ):
        raise ValueError(
            f"{name} must be an int >= {minimum} or a pair of them. Received: {name}={value!r}"
        )
    return pair


def one_of(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"{name} must be one of {sorted(allowed)}. Received: {name}={value!r}")
    return value
