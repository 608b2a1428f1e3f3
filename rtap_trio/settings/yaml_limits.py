"""YAML read within limits: size, nesting depth and values once aliases are expanded.

Apart from the loader because every YAML RTAP reads goes through it (profiles,
environment values, ``--set`` values), and its limits are a defence against
hostile documents (an alias bomb, a deeply nested one), checked on the node
graph before anything is built.
"""

from __future__ import annotations

from typing import Any

import yaml

__all__ = ["MAX_PROFILE_BYTES", "MAX_YAML_DEPTH", "MAX_YAML_VALUES", "load_yaml_value"]


#: Profiles are a few kilobytes; a 10 MB one took 30 s and 1 GB to reject.
MAX_PROFILE_BYTES = 256 * 1024
#: Values in a document once every alias is expanded. Profiles hold about a
#: hundred; an "alias bomb" (each anchor a list of two aliases of the one
#: before) holds a few dozen aliases that expand to billions of values.
MAX_YAML_VALUES = 10_000
#: Sections are two levels deep; a deeply nested document ends in a RecursionError.
MAX_YAML_DEPTH = 32


def _safe_loader_base() -> type[Any]:
    """PyYAML's safe loader, with libyaml's scanner and parser where PyYAML has it.

    The wheels are built with libyaml: pc2's profile chain loads in 5 ms instead
    of 30 (every start, every ``config``; 20 loads each, 2026-12-03). The nodes
    are still composed in Python (:class:`yaml.composer.Composer` comes first),
    where the nesting limit is checked: libyaml's own composer recurses in C
    without one.
    """
    if not getattr(yaml, "__with_libyaml__", False):
        return yaml.SafeLoader
    from yaml.cyaml import CParser  # type: ignore[attr-defined]

    class SafeEventLoader(
        yaml.composer.Composer,
        CParser,
        yaml.constructor.SafeConstructor,
        yaml.resolver.Resolver,
    ):
        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            yaml.composer.Composer.__init__(self)
            yaml.constructor.SafeConstructor.__init__(self)
            yaml.resolver.Resolver.__init__(self)

    return SafeEventLoader


class _LimitedLoader(_safe_loader_base()):  # type: ignore[misc]
    """PyYAML's safe loader with a nesting limit, checked while composing."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        self._depth += 1
        if self._depth > MAX_YAML_DEPTH:
            raise yaml.YAMLError(f"nested deeper than {MAX_YAML_DEPTH} levels")
        try:
            return super().compose_node(parent, index)  # type: ignore[no-any-return]
        finally:
            self._depth -= 1


def _expanded_values(node: yaml.Node, sizes: dict[int, int]) -> int:
    """How many values ``node`` becomes with its aliases expanded; linear in the graph."""
    known = sizes.get(id(node))
    if known is not None:
        return known
    # A node that holds an alias of itself is infinite: over the limit.
    sizes[id(node)] = MAX_YAML_VALUES + 1
    total = 1
    if isinstance(node, yaml.SequenceNode):
        total += sum(_expanded_values(item, sizes) for item in node.value)
    elif isinstance(node, yaml.MappingNode):
        total += sum(
            _expanded_values(key, sizes) + _expanded_values(value, sizes)
            for key, value in node.value
        )
    sizes[id(node)] = min(total, MAX_YAML_VALUES + 1)  # no need to count past the limit
    return sizes[id(node)]


def load_yaml_value(text: str) -> Any:
    """One YAML document through the limited loader (raises yaml.YAMLError).

    For every YAML RTAP reads: profiles, environment values, ``--set`` values.
    The limits act on the node graph before anything is constructed or
    expanded, so a hostile document costs milliseconds, not gigabytes.
    """
    loader = _LimitedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_values(node, {}) > MAX_YAML_VALUES:
            raise yaml.YAMLError(
                f"more than {MAX_YAML_VALUES:,} values once its aliases are expanded"
            )
        return loader.construct_document(node)
    finally:
        loader.dispose()
