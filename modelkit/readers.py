"""Bounded readers for user-given JSON, YAML and TOML: what a parser would accept but a config
must not hold is refused with one clear error, before it can hang or crash a verb.

* **nesting** deeper than :data:`MAX_DEPTH` (``[[[[…]]]]`` 100,000 times is a RecursionError in
  any recursive parser, and in everything that walks the result afterwards);
* **YAML aliases** beyond :data:`MAX_ALIASES` (a "billion laughs" document is a few hundred
  bytes that expand to gigabytes when anything walks it);
* **duplicate keys** in a JSON object or YAML mapping (the last one silently wins otherwise;
  TOML refuses them itself).

Each reader takes the error class to raise (``ConfigError`` for a config file, ``RunDirError``
for a run's file) and the source to name.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

MAX_DEPTH = 100
MAX_ALIASES = 100
MAX_NODES = 1_000_000  # values in a YAML document once its aliases are expanded

_BRACKETS = re.compile(r'"(?:[^"\\\n]|\\.)*"|[\[\]{}]')

Raise = Callable[..., Exception]


def check_depth(text: str, *, source: str, error: Raise) -> None:
    """Refuse text whose ``[``/``{`` nesting (outside double-quoted strings) passes MAX_DEPTH."""
    depth = 0
    for match in _BRACKETS.finditer(text):
        token = match.group(0)
        if token in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                line = text.count("\n", 0, match.start()) + 1
                raise error(
                    f"{source}: nested deeper than {MAX_DEPTH} levels (line {line})",
                    hint="a config holds a few levels of tables and lists; flatten it",
                )
        elif token in "]}":
            depth = max(0, depth - 1)


def loads_json(text: str, *, source: str, error: Raise) -> Any:
    """``json.loads`` with the depth bound and duplicate keys refused."""
    check_depth(text, source=source, error=error)

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in items:
            if key in out:
                raise error(
                    f"{source}: key '{key}' appears twice in one object",
                    hint="keep one of them (a parser would silently take the last)",
                )
            out[key] = value
        return out

    try:
        return json.loads(text, object_pairs_hook=pairs)
    except RecursionError:  # a bound the text scan missed
        raise error(f"{source}: nested too deeply", hint="flatten it") from None


def loads_yaml(text: str, *, source: str, error: Raise) -> Any:
    """``yaml.safe_load`` with the depth bound, the alias budget and duplicate keys refused."""
    import yaml

    check_depth(text, source=source, error=error)

    class Loader(yaml.SafeLoader):
        aliases = 0
        depth = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                Loader.aliases += 1
                if Loader.aliases > MAX_ALIASES:
                    raise error(
                        f"{source}: more than {MAX_ALIASES} YAML aliases (*name)",
                        hint="write the values out; a few aliases at most",
                    )
            Loader.depth += 1
            try:
                if Loader.depth > MAX_DEPTH:
                    raise error(
                        f"{source}: nested deeper than {MAX_DEPTH} levels",
                        hint="a config holds a few levels of tables and lists; flatten it",
                    )
                return super().compose_node(parent, index)
            finally:
                Loader.depth -= 1

        def get_single_node(self) -> Any:
            node = super().get_single_node()
            if node is not None:
                _check_expanded(node, source=source, error=error)
            return node

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: set[Any] = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                if isinstance(key, list | dict):
                    continue  # unhashable; the base class says so
                if key in seen:
                    line = key_node.start_mark.line + 1
                    raise error(
                        f"{source}: key '{key}' appears twice in one mapping (line {line})",
                        hint="keep one of them (a parser would silently take the last)",
                    )
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

    try:
        return yaml.load(text, Loader=Loader)  # noqa: S506 (a SafeLoader subclass)
    except RecursionError:
        raise error(f"{source}: nested too deeply", hint="flatten it") from None


def _check_expanded(root: Any, *, source: str, error: Raise) -> None:
    """Refuse a YAML node graph that, with its aliases expanded, holds more than MAX_NODES
    values, nests deeper than MAX_DEPTH, or refers to itself."""
    size: dict[int, tuple[int, int]] = {}  # id -> (values, depth) once expanded
    visiting: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        children = _children(node)
        if done:
            visiting.discard(id(node))
            count = 1 + sum(size[id(c)][0] for c in children)
            depth = 1 + max((size[id(c)][1] for c in children), default=0)
            if count > MAX_NODES or depth > MAX_DEPTH:
                raise error(
                    f"{source}: its aliases expand to more than {MAX_NODES:,} values or "
                    f"{MAX_DEPTH} levels",
                    hint="write the values out; a YAML alias bomb is refused",
                )
            size[id(node)] = (count, depth)
        elif id(node) not in size:
            if id(node) in visiting:
                raise error(f"{source}: a YAML alias refers to itself", hint="remove the cycle")
            visiting.add(id(node))
            stack.append((node, True))
            stack.extend((c, False) for c in children if id(c) not in size)


def _children(node: Any) -> list[Any]:
    import yaml

    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def loads_toml(text: str, *, source: str, error: Raise) -> Any:
    """``tomllib.loads`` with the depth bound (TOML refuses duplicate keys itself)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]

    check_depth(text, source=source, error=error)
    try:
        return tomllib.loads(text)
    except RecursionError:
        raise error(f"{source}: nested too deeply", hint="flatten it") from None
