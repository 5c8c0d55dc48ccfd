"""Reading the YAML files a user hands esper-ab: one reader, bounded.

:func:`read_yaml_mapping` is the only place that parses a user's YAML (sweep spaces, gate
files, ``winner.yaml``). It refuses, with one line naming the file and the fix:

- a path that is not a file, a file over :data:`MAX_BYTES`, text that is not UTF-8;
- a syntax error (with its line and column);
- nesting deeper than :data:`MAX_DEPTH`, more than :data:`MAX_ALIASES` alias references (the
  "billion laughs" anchor bomb) or more than :data:`MAX_NODES` nodes -- all checked while the
  document is composed, before any Python object is built;
- a document that is not a mapping.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from esper_ab.errors import ConfigError, shown

__all__ = ["MAX_ALIASES", "MAX_BYTES", "MAX_DEPTH", "MAX_NODES", "read_yaml_mapping",
           "parse_yaml_text"]

MAX_BYTES = 1 << 20        # 1 MiB: a space or gate file is a few KB
MAX_DEPTH = 64
MAX_ALIASES = 100
MAX_NODES = 200_000


class _Bounded(Exception):
    pass


class _BoundedLoader(yaml.SafeLoader):
    """A SafeLoader that counts depth, aliases and nodes while composing."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0
        self._nodes = 0
        self._sizes: dict[int, int] = {}

    def _size(self, node: Any) -> int:
        """Nodes in ``node`` with every alias expanded (memoized; depth is bounded)."""
        key = id(node)
        if key not in self._sizes:
            if isinstance(node, yaml.SequenceNode):
                n = 1 + sum(self._size(c) for c in node.value)
            elif isinstance(node, yaml.MappingNode):
                n = 1 + sum(self._size(k) + self._size(v) for k, v in node.value)
            else:
                n = 1
            self._sizes[key] = min(n, MAX_NODES + 1)
        return self._sizes[key]

    def compose_node(self, parent: Any, index: Any) -> Any:  # noqa: D401 (PyYAML hook)
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise _Bounded(f"more than {MAX_ALIASES} alias references (*name)")
            anchor = self.peek_event().anchor
            if anchor in self.anchors:   # what the alias expands to counts in full: 72
                self._nodes += self._size(self.anchors[anchor])   # aliases can mean 9**9
                if self._nodes > MAX_NODES:
                    raise _Bounded(f"more than {MAX_NODES:,} nodes once its aliases expand")
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise _Bounded(f"more than {MAX_NODES:,} nodes")
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _Bounded(f"nesting deeper than {MAX_DEPTH} levels")
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def parse_yaml_text(text: str, *, what: str, fix: str) -> Any:
    """Parse YAML text within the bounds above (``what`` names it in errors)."""
    loader = None
    try:
        loader = _BoundedLoader(text)   # the reader refuses control characters right here
        return loader.get_single_data()
    except _Bounded as exc:
        raise ConfigError(f"{what} has {exc}: {fix}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or getattr(exc, "reason", None) \
            or exc.__class__.__name__
        raise ConfigError(" ".join(f"{what} is not valid YAML{where} ({problem}): "
                                   "fix its syntax".split())) from None
    except RecursionError:
        raise ConfigError(f"{what} nests too deeply: {fix}") from None
    finally:
        if loader is not None:
            loader.dispose()


def read_yaml_mapping(path: str | Path, what: str, fix: str) -> dict[str, Any]:
    """The top-level mapping of a user's YAML file, or one ``ConfigError`` line.

    ``what`` names the file's role ("sweep space", "gate file"); ``fix`` says what to give
    instead when the path is not a usable file.
    """
    p = Path(path)
    label = f"{what} {shown(str(path))}"
    if not p.is_file():
        raise ConfigError(f"{label} is not a file: {fix}")
    size = p.stat().st_size
    if size > MAX_BYTES:
        raise ConfigError(f"{label} is {size:,} bytes, over the {MAX_BYTES:,}-byte limit: "
                          f"{fix}")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{label} is not UTF-8 text: save it as UTF-8 YAML") from None
    except OSError as exc:
        raise ConfigError(f"{label} cannot be read ({exc.strerror}): {fix}") from None
    data = parse_yaml_text(text, what=label, fix=fix)
    if not isinstance(data, dict):
        raise ConfigError(f"{label} holds {type(data).__name__}, not a mapping of "
                          f"'key: value' pairs: {fix}")
    return data
