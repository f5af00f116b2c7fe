"""Minimal inclusive XML canonicalisation (C14N 1.0/1.1 without comments) for NVIDIA RIMs.

Why by hand: the only Python XML-DSig library (signxml) pulls in lxml and pins versions that
NVIDIA's own verifier had to freeze (REFERENCE §4.5), and the standard library's
``xml.etree.ElementTree.canonicalize`` implements C14N 2.0, which renders namespace
declarations differently. NVIDIA's RIMs use a small, fixed subset of XML: elements,
attributes, namespace declarations and whitespace text. This module canonicalises exactly
that subset and refuses everything else (DTDs, entities, processing instructions,
``xml:*`` attributes), so a document it cannot canonicalise correctly is rejected rather
than digested wrongly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from xml.parsers import expat

from teegate.errors import EvidenceError

MAX_XML_BYTES = 4 * 1024 * 1024
MAX_DEPTH = 32  # NVIDIA's RIMs nest 5 deep; rendering is recursive


@dataclass(eq=False)
class Node:
    """An element: its qualified name as written, attributes in source order, children."""

    qname: str
    attrs: list[tuple[str, str]]
    parent: Node | None
    children: list[Node | str] = field(default_factory=list)
    ns: dict[str, str] = field(default_factory=dict)  # in-scope prefix -> URI ("" = default)

    def split(self, qname: str, *, attribute: bool = False) -> tuple[str, str]:
        """(namespace URI, local name) of a qualified name in this element's scope."""
        prefix, _, local = qname.rpartition(":")
        if not prefix:
            return ("" if attribute else self.ns.get("", ""), local)
        uri = self.ns.get(prefix)
        if uri is None:
            raise EvidenceError(f"XML: undeclared namespace prefix {prefix!r}")
        return (uri, local)

    @property
    def name(self) -> tuple[str, str]:
        return self.split(self.qname)

    def attr(self, local: str) -> str | None:
        for q, v in self.attrs:
            if not q.startswith("xmlns") and q.rpartition(":")[2] == local:
                return v
        return None

    def elements(self) -> list[Node]:
        return [c for c in self.children if isinstance(c, Node)]


def _refuse(what: str) -> Callable[..., None]:
    def handler(*_: object) -> None:
        raise EvidenceError(f"XML: {what} are not allowed in a RIM")
    return handler


def parse(xml: bytes) -> Node:
    """Parse ``xml`` into a tree of ``Node``s, refusing DTDs, entities and PIs."""
    if len(xml) > MAX_XML_BYTES:
        raise EvidenceError(f"XML: document larger than {MAX_XML_BYTES} bytes")
    parser = expat.ParserCreate()
    parser.ordered_attributes = True
    stack: list[Node] = []
    root: list[Node] = []

    def start(qname: str, flat: list[str]) -> None:
        attrs = list(zip(flat[::2], flat[1::2], strict=True))
        parent = stack[-1] if stack else None
        if len(stack) >= MAX_DEPTH:
            raise EvidenceError(f"XML: elements nested deeper than {MAX_DEPTH}")
        if parent is None and root:
            raise EvidenceError("XML: more than one document element")
        node = Node(qname, attrs, parent, ns=dict(parent.ns) if parent else {})
        for q, v in attrs:
            if q == "xmlns":
                node.ns[""] = v
            elif q.startswith("xmlns:"):
                if not v:
                    raise EvidenceError("XML: a prefix may not be undeclared")
                node.ns[q[6:]] = v
            elif q.startswith("xml:"):
                raise EvidenceError(f"XML: attribute {q} is not supported in a RIM")
        if parent is None:
            root.append(node)
        else:
            parent.children.append(node)
        stack.append(node)

    def end(_: str) -> None:
        stack.pop()

    def text(data: str) -> None:
        if not stack:
            return
        children = stack[-1].children
        if children and isinstance(children[-1], str):
            children[-1] += data
        else:
            children.append(data)

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text
    parser.StartDoctypeDeclHandler = _refuse("document type declarations")
    parser.EntityDeclHandler = _refuse("entity declarations")
    parser.ProcessingInstructionHandler = _refuse("processing instructions")
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    try:
        parser.Parse(xml, True)
    except expat.ExpatError as e:
        raise EvidenceError(f"XML: not well-formed: {e}") from e
    except (ValueError, UnicodeError, RecursionError) as e:
        raise EvidenceError(f"XML: unreadable: {e}") from e
    if not root:
        raise EvidenceError("XML: no document element")
    for node in _walk(root[0]):
        node.name  # noqa: B018 - resolves every prefix now, so later use cannot fail
        for q, _ in node.attrs:
            if not q.startswith("xmlns"):
                node.split(q, attribute=True)
    return root[0]


def _walk(node: Node) -> list[Node]:
    out = [node]
    i = 0
    while i < len(out):
        out.extend(out[i].elements())
        i += 1
    return out


def _escape_text(s: str) -> str:
    return (s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace("\r", "&#xD;"))


def _escape_attr(s: str) -> str:
    return (s.replace("&", "&amp;").replace("<", "&lt;").replace('"', "&quot;")
            .replace("\t", "&#x9;").replace("\n", "&#xA;").replace("\r", "&#xD;"))


def canonicalize(node: Node, *, exclude: Node | None = None) -> bytes:
    """Inclusive C14N (no comments) of the subtree at ``node``, leaving out ``exclude``.

    At the apex every namespace in scope is rendered (as inclusive C14N does for a document
    subset such as ``SignedInfo``); below it, only declarations that change the scope.
    """
    out: list[str] = []
    _render(node, {}, exclude, out)
    return "".join(out).encode("utf-8")


def _render(node: Node, rendered: dict[str, str], exclude: Node | None, out: list[str]) -> None:
    decls = []
    for prefix, uri in node.ns.items():
        if (prefix or uri) and rendered.get(prefix) != uri:
            decls.append((prefix, uri))
    if node.ns.get("", "") == "" and rendered.get("", "") != "":
        decls.append(("", ""))
    decls.sort()
    attrs = sorted(
        ((node.split(q, attribute=True), q, v) for q, v in node.attrs
         if q != "xmlns" and not q.startswith("xmlns:")),
        key=lambda a: a[0],
    )
    out.append("<" + node.qname)
    for prefix, uri in decls:
        out.append(f' xmlns{":" + prefix if prefix else ""}="{_escape_attr(uri)}"')
    for _, q, v in attrs:
        out.append(f' {q}="{_escape_attr(v)}"')
    out.append(">")
    scope = node.ns
    for child in node.children:
        if isinstance(child, str):
            out.append(_escape_text(child))
        elif child is not exclude:
            _render(child, scope, exclude, out)
    out.append(f"</{node.qname}>")
