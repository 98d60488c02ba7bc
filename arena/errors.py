"""The one error type for bad user input (unknown names, impossible shapes).

`python -m arena.run` turns a `ConfigError` into a one-line message on stderr and exit code 2, so every
message must name the bad key and what is allowed, in one line.
"""


class ConfigError(ValueError):
    """Bad configuration: the message names the key, the bad value and what is allowed."""


def choice_error(key: str, value: object, allowed) -> ConfigError:
    """`ConfigError` for a value that is not one of `allowed`."""
    return ConfigError(f"{key}={value!r} is not valid; choose one of: {', '.join(sorted(map(str, allowed)))}")
