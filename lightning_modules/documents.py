"""Untrusted JSON and YAML documents (specs, request bodies) read without surprises.

Nesting is bounded (a body nested 10,000 levels deep would otherwise end in a RecursionError),
YAML mappings may not repeat a key (the last one would silently win), and numbers beyond what
a float holds are refused instead of overflowing later. Every problem is a `DocumentError`
whose message says what is wrong, for a 400/422 or a one-line CLI error.
"""

from __future__ import annotations

import json
import math

import yaml

MAX_DEPTH = 64  # levels of lists and mappings; a job spec needs 4, a prediction body 4
MAX_ABS_NUMBER = 1e300


class DocumentError(ValueError):
    """A document that cannot be read safely; the message names the problem."""


MAX_NODES = 200_000  # values of a YAML document with every alias expanded; a spec has ~100


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _bound_expansion(root: yaml.Node) -> None:
    """Refuses a document whose aliases expand past `MAX_NODES` values ("billion laughs": 9
    levels of 9 aliases are 400 bytes of text and 387 million values), or that refers to
    itself. Aliases share their node, so sizes are summed once per node: linear in the text."""
    size: dict[int, int] = {}
    done, busy = 2, 1
    state: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, closing = stack.pop()
        key = id(node)
        if closing:
            size[key] = 1 + sum(size[id(c)] for c in _children(node))
            state[key] = done
            if size[key] > MAX_NODES:
                line = node.start_mark.line + 1
                raise DocumentError(
                    f"aliases expand to over {MAX_NODES:,} values (at line {line}); write the "
                    "document without anchors and aliases"
                )
            continue
        if state.get(key) == done:
            continue
        if state.get(key) == busy:  # an ancestor: pushed children are finished first (LIFO)
            raise DocumentError(f"an alias refers to itself (line {node.start_mark.line + 1})")
        state[key] = busy
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if state.get(id(c)) != done)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys and alias bombs (anchors and merges still work)."""

    def construct_document(self, node):
        _bound_expansion(node)
        return super().construct_document(node)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                line = key_node.start_mark.line + 1
                raise DocumentError(f"duplicate key {key!r} (line {line})")
            seen.add(key) if isinstance(key, (str, int, float, bool)) else None
        return super().construct_mapping(node, deep)


def load_yaml(text: str) -> object:
    try:
        doc = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError:
        raise DocumentError(f"nested deeper than {MAX_DEPTH} levels") from None
    except yaml.YAMLError as e:
        raise DocumentError(f"not valid YAML ({str(e).splitlines()[0][:200]})") from None
    return check(doc)


def load_json(raw: bytes | str, walk: bool = True) -> object:
    """`walk=False` skips the per-node check (a model server's hot path, whose input validation
    refuses deep or huge values itself); nesting beyond the interpreter's limit is still caught."""
    try:
        doc = json.loads(raw)
    except RecursionError:
        raise DocumentError(f"nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as e:  # UnicodeDecodeError and a number too long to parse included
        raise DocumentError(f"not valid JSON ({str(e).splitlines()[0][:200]})") from None
    return check(doc) if walk else doc


def check(doc: object) -> object:
    """`doc` itself if its nesting and numbers are within bounds (walked without recursion)."""
    stack = [(doc, 0, "")]
    while stack:
        node, depth, where = stack.pop()
        if isinstance(node, dict):
            children = [(v, f"{where}.{k}" if where else str(k)) for k, v in node.items()]
        elif isinstance(node, list):
            children = [(v, f"{where}[{i}]") for i, v in enumerate(node)]
        else:
            if isinstance(node, (int, float)) and not isinstance(node, bool):
                if isinstance(node, int) and abs(node) > MAX_ABS_NUMBER:
                    raise DocumentError(
                        f"{where or 'body'}: number too large ({len(str(node))} digits)"
                    )
                if isinstance(node, float) and math.isfinite(node) and abs(node) > MAX_ABS_NUMBER:
                    raise DocumentError(f"{where or 'body'}: number too large")
            continue
        if depth >= MAX_DEPTH:
            raise DocumentError(f"{where or 'body'}: nested deeper than {MAX_DEPTH} levels")
        stack.extend((child, depth + 1, w) for child, w in children)
    return doc
