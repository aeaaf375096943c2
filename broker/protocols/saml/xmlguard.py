"""Refuse dangerous XML before any parser sees it, and a hardened lxml parser for the rest.

A DOCTYPE has no business in SAML: refusing it outright closes XXE, entity expansion
("billion laughs") and DTD-based tricks, whatever a parser's defaults are.
"""

from __future__ import annotations

import re

from lxml import etree

_DOCTYPE = re.compile(rb"<!\s*DOCTYPE|<!\s*ENTITY", re.IGNORECASE)


class XmlRefused(ValueError):
    pass


def check_no_doctype(data: bytes) -> None:
    """Raise ``XmlRefused`` when the document declares a DOCTYPE or an entity."""
    probe = data
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        probe = data.decode("utf-16").encode("utf-8")
    if _DOCTYPE.search(probe):
        raise XmlRefused("DOCTYPE/ENTITY declarations are not allowed")


def safe_parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False,
        huge_tree=False, remove_comments=False, remove_pis=False,
    )
