"""YAML read without trusting the file: every YAML file synthgen reads (configs, schemes, prompt templates, saved
run configs) goes through ``load_yaml``.

It is PyYAML's safe loader with two bounds, checked on the node graph before any value is built: aliases may not
expand the document past ``MAX_VALUES`` values (a 500-byte "billion laughs" file of nested aliases would otherwise
expand to gigabytes as soon as something formats it), nor refer to a value that holds them; and values may not nest
deeper than ``MAX_DEPTH`` levels. Breaking a bound, or a number PyYAML cannot build, is a ``yaml.YAMLError`` whose
first line says why, so each reader's one-line "not valid YAML" error reports it.
"""

from __future__ import annotations

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

MAX_VALUES = 100_000
MAX_DEPTH = 64


class BoundedLoader(yaml.SafeLoader):
    """The safe loader, refusing a document whose aliases expand past ``MAX_VALUES`` values or that nests deeper
    than ``MAX_DEPTH``."""

    def construct_document(self, node: Node):
        """Check the bounds on the composed node graph, then build the document's values."""
        _expanded_size(node, {}, set(), 0)
        return super().construct_document(node)


def _refuse(problem: str, node: Node) -> yaml.YAMLError:
    return yaml.constructor.ConstructorError(None, None, problem, node.start_mark)


def _expanded_size(node: Node, sizes: dict[int, int], open_nodes: set[int], depth: int) -> int:
    """How many values ``node`` is once its aliases are expanded (each shared node counted once per use, and
    measured once)."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_nodes:
        raise _refuse("an alias refers to a value that holds it", node)
    if depth > MAX_DEPTH:
        raise _refuse(f"values nest deeper than {MAX_DEPTH} levels", node)
    if isinstance(node, SequenceNode):
        children = node.value
    elif isinstance(node, MappingNode):
        children = [part for pair in node.value for part in pair]
    else:
        children = []
    open_nodes.add(key)
    total = 1
    for child in children:
        total += _expanded_size(child, sizes, open_nodes, depth + 1)
        if total > MAX_VALUES:
            raise _refuse(f"aliases expand it past {MAX_VALUES} values; write the values out", node)
    open_nodes.discard(key)
    sizes[key] = total
    return total


def load_yaml(text: str):
    """The value a YAML document holds, read with ``BoundedLoader``; a bad document is a ``yaml.YAMLError``."""
    try:
        return yaml.load(text, Loader=BoundedLoader)  # noqa: S506 (a SafeLoader subclass)
    except RecursionError:  # PyYAML composes recursively: a file of thousands of '[' gets here before any bound
        raise yaml.YAMLError(f"values nest deeper than {MAX_DEPTH} levels") from None
    except (ValueError, OverflowError) as exc:  # e.g. an integer of more digits than Python converts
        raise yaml.YAMLError(f"a value cannot be read: {str(exc).split(':')[0][:120]}") from None
