"""XSD validation of SAML messages with libxml2 (lxml) over pysaml2's own bundled schemas.

Why: pysaml2 schema-validates every signed item it checks (the Response, then the Assertion)
with the pure-Python ``xmlschema`` package; profiling the ACS showed ~60% of the time there.
libxml2 validates the same document against the same XSD files (``saml2/data/schemas``) in a
fraction of that. ``install()`` swaps the function ``saml2.sigver`` calls, keeping its
contract: ``saml2.xml.schema.XMLSchemaError`` when the document is invalid.

Nothing is ever fetched: the bundled XSDs import each other by their *published* URLs
(``http://www.w3.org/...``); a resolver maps each of those to the bundled copy and refuses
any other location, and every parser runs with ``no_network=True``. Instance documents'
``xsi:schemaLocation`` hints are ignored: the verdict always comes from the bundled schemas.

Thread safety: the schema is compiled once per process under a lock; parsers are per thread;
validation holds a lock because an lxml validator keeps its error log on the object (a
validation takes well under a millisecond).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path
from typing import Any

import saml2.data.schemas
import saml2.sigver
from lxml import etree
from saml2.xml.schema import XMLSchemaError
from saml2.xml.schema import validate as xmlschema_validate

__all__ = ["SchemaFetchRefused", "XMLSchemaError", "install", "installed", "uninstall", "validate"]

SCHEMA_DIR = Path(str(files(saml2.data.schemas)))

# The namespaces pysaml2 maps in saml2/xml/schema/__init__.py, dependencies first: libxml2
# honours only the first import of a namespace, so xmldsig must come from the bundled file.
NAMESPACES: dict[str, str] = {
    "http://www.w3.org/XML/1998/namespace": "xml.xsd",
    "http://www.w3.org/2000/09/xmldsig#": "xmldsig-core-schema.xsd",
    "http://www.w3.org/2001/04/xmlenc#": "xenc-schema.xsd",
    "http://www.w3.org/2009/xmlenc11#": "xenc-schema-11.xsd",
    "http://schemas.xmlsoap.org/soap/envelope/": "envelope.xsd",
    "urn:oasis:names:tc:SAML:2.0:assertion": "saml-schema-assertion-2.0.xsd",
    "urn:oasis:names:tc:SAML:2.0:protocol": "saml-schema-protocol-2.0.xsd",
    "urn:oasis:names:tc:SAML:2.0:metadata": "saml-schema-metadata-2.0.xsd",
    "http://eidas.europa.eu/metadata/servicelist": "eidas-schema-metadata-servicelist.xsd",
    "http://eidas.europa.eu/saml-extensions": "eidas-schema-saml-extensions.xsd",
    "http://eidas.europa.eu/attributes/naturalperson": "eidas-schema-attribute-naturalperson.xsd",
    "http://eidas.europa.eu/attributes/legalperson": "eidas-schema-attribute-legalperson.xsd",
}

# Every absolute schemaLocation found in the bundled XSDs (grep schemaLocation), mapped to the
# bundled copy. The 2009/01 xml.xsd only appears in xml.xsd's documentation; mapped anyway.
REMOTE_LOCATIONS: dict[str, str] = {
    "http://www.w3.org/TR/2002/REC-xmldsig-core-20020212/xmldsig-core-schema.xsd": "xmldsig-core-schema.xsd",
    "http://www.w3.org/TR/2002/REC-xmlenc-core-20021210/xenc-schema.xsd": "xenc-schema.xsd",
    "http://www.w3.org/2001/xml.xsd": "xml.xsd",
    "http://www.w3.org/2009/01/xml.xsd": "xml.xsd",
    "http://schemas.xmlsoap.org/soap/envelope/": "envelope.xsd",
}


class SchemaFetchRefused(XMLSchemaError):
    """A schema or entity location outside the bundled XSDs was asked for."""


def _known_locations() -> dict[str, str]:
    """URL or path -> bundled file (relative imports between bundled XSDs arrive as paths or file URLs)."""
    known = {url: str(SCHEMA_DIR / name) for url, name in REMOTE_LOCATIONS.items()}
    for path in SCHEMA_DIR.glob("*.xsd"):
        known[str(path)] = known[path.as_uri()] = str(path)
    return known


class BundledSchemaResolver(etree.Resolver):
    """Serve bundled XSDs for their published URLs; refuse everything else (fail closed)."""

    def __init__(self) -> None:
        super().__init__()
        self._known = _known_locations()

    def resolve(self, system_url: str | None, public_id: str | None, context: Any) -> Any:
        path = self._known.get(system_url or "")
        if path is None:
            raise SchemaFetchRefused(f"refusing to load {system_url!r} (public id {public_id!r})")
        return self.resolve_filename(path, context)


def _parser() -> etree.XMLParser:
    """A hardened parser: no DTD, no entity expansion, no network, no huge trees."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False,
                             huge_tree=False)
    parser.resolvers.add(BundledSchemaResolver())
    return parser


def _compile() -> etree.XMLSchema:
    """One wrapper schema importing each namespace from its bundled file (as pysaml2 does)."""
    imports = "".join(f'<xs:import namespace="{ns}" schemaLocation="{(SCHEMA_DIR / name).as_uri()}"/>'
                      for ns, name in NAMESPACES.items())
    wrapper = f'<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema">{imports}</xs:schema>'
    return etree.XMLSchema(etree.fromstring(wrapper, _parser(), base_url=SCHEMA_DIR.as_uri() + "/"))


_schema: etree.XMLSchema | None = None
_schema_lock = threading.Lock()
# An lxml validator keeps its error log on the object: one validation at a time per schema.
_validate_lock = threading.Lock()
_local = threading.local()
_XML_DECLARATION = re.compile(r"\A<\?xml\s[^>]*\?>")


def get_schema() -> etree.XMLSchema:
    """The compiled schema, built once per process on first use (a few milliseconds)."""
    global _schema
    if _schema is None:
        with _schema_lock:
            if _schema is None:
                _schema = _compile()
    return _schema


def _parse(doc: str | bytes) -> etree._Element:
    parser = getattr(_local, "parser", None)
    if parser is None:
        parser = _local.parser = _parser()
    if isinstance(doc, str):
        # Already decoded text: its declaration's encoding (lxml refuses it on str) is moot.
        doc = _XML_DECLARATION.sub("", doc, count=1)
    return etree.fromstring(doc, parser)


def validate(doc: str | bytes | etree._Element) -> None:
    """Raise ``XMLSchemaError`` (pysaml2's class, same ``{"doc", "error"}`` payload) if invalid."""
    schema = get_schema()
    try:
        tree = doc if isinstance(doc, etree._Element) else _parse(doc)
    except (etree.LxmlError, ValueError, TypeError) as e:  # pysaml2 also turns these into XMLSchemaError
        raise XMLSchemaError({"doc": doc, "error": str(e)}) from e
    with _validate_lock:
        valid = schema.validate(tree)
        log = [] if valid else list(schema.error_log)
    if not valid:
        errors = "; ".join(f"line {e.line}: {e.message} (at {e.path})" for e in log)
        raise XMLSchemaError({"doc": doc, "error": errors})


def validate_doc_with_schema(doc: Any, validator: Any = None) -> None:
    """Stand-in for ``saml2.sigver.validate_doc_with_schema`` (``saml2.xml.schema.validate``)."""
    if validator is not None:  # an explicit xmlschema validator: only xmlschema can use it
        xmlschema_validate(doc, validator)
        return
    validate(doc)


_original: Callable[..., None] | None = None
_install_lock = threading.Lock()


def install() -> None:
    """Make pysaml2's signature checks validate with libxml2. Idempotent.

    The schema is compiled here, so a broken bundle fails at start-up rather than at a login.
    """
    global _original
    get_schema()
    with _install_lock:
        if saml2.sigver.validate_doc_with_schema is not validate_doc_with_schema:
            _original = saml2.sigver.validate_doc_with_schema
            saml2.sigver.validate_doc_with_schema = validate_doc_with_schema


def uninstall() -> None:
    """Restore the function ``install()`` replaced (for tests)."""
    global _original
    with _install_lock:
        if saml2.sigver.validate_doc_with_schema is validate_doc_with_schema and _original is not None:
            saml2.sigver.validate_doc_with_schema = _original
        _original = None


def installed() -> bool:
    """Whether pysaml2 currently validates with this module (for health checks and tests)."""
    return saml2.sigver.validate_doc_with_schema is validate_doc_with_schema
