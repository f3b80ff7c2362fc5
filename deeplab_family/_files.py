"""Atomic file writes: a reader sees the old file or the new one, never half of one.

The text goes to a hidden temporary file in the same directory, which is then renamed over
the destination (`os.replace` is atomic within a file system). A failure part-way leaves the
destination as it was and removes the temporary file.

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "info.json")
    >>> write_json(path, {"miou": 0.75}) == path
    True
    >>> open(path).read()
    '{\\n "miou": 0.75\\n}'
"""

import json
import os


def temporary_name(path, pid=None):
    """`<dir>/.<name>.tmp-<pid>`: hidden from globs of the final names."""
    directory, name = os.path.split(path)
    return os.path.join(directory, f".{name}.tmp-{os.getpid() if pid is None else pid}")


def write_text(path, text):
    """Writes `text` to `path` atomically and returns `path`."""
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    tmp = temporary_name(path)
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def write_json(path, value, indent=1):
    """`value` as JSON, atomically."""
    return write_text(path, json.dumps(value, indent=indent))


def write_yaml(path, value):
    """`value` as YAML (keys in insertion order), atomically."""
    import yaml

    return write_text(path, yaml.safe_dump(value, sort_keys=False))
