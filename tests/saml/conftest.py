"""Fixtures for SAML tests: SP keys in a temporary folder, a registered pysaml2 IdP."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from django.test import Client

from broker import keys
from broker.protocols.saml.metadata import register
from tests.saml.idp import TestIdP, post_body

BASE = "https://sso.test"


@pytest.fixture
def sp_keys(settings, tmp_path):
    settings.SAML_KEY_DIR = tmp_path / "sp-keys"
    return keys.generate(size=2048, actor="test")


@dataclass
class SamlSetup:
    idp: TestIdP
    slug: str
    client: Client

    @property
    def acs(self) -> str:
        return f"{BASE}/sso/{self.slug}/saml/acs/"

    @property
    def sp_entity_id(self) -> str:
        return f"{BASE}/sso/{self.slug}/saml/metadata/"

    def start(self, next_url: str = "/portal/"):
        """Begin a login; returns (AuthnRequest as parsed by the IdP, RelayState)."""
        response = self.client.get(f"/sso/{self.slug}/login/", {"next": next_url})
        assert response.status_code == 302, response.content[:500]
        request, relay_state = self.idp.read_redirect(response["Location"])
        return request, relay_state

    def response_for(self, request, **kwargs) -> str:
        kwargs.setdefault("destination", self.acs)
        kwargs.setdefault("sp_entity_id", self.sp_entity_id)
        return self.idp.response_xml(in_response_to=request.message.id, **kwargs)

    def post(self, xml: str, relay_state: str | None, client: Client | None = None):
        return (client or self.client).post(f"/sso/{self.slug}/saml/acs/", post_body(xml, relay_state))

    def login(self, **kwargs):
        request, relay_state = self.start()
        return self.post(self.response_for(request, **kwargs), relay_state)


def make_setup(tmp_path, slug: str = "corp", client: Client | None = None, entity_id=None,
               **register_kwargs) -> SamlSetup:
    directory = tmp_path / slug
    directory.mkdir(exist_ok=True)
    idp = TestIdP(directory, entity_id=entity_id or f"https://{slug}.idp.example/idp")
    register(slug, name=slug.title(), metadata_xml=idp.metadata_xml(), actor="test", **register_kwargs)
    client = client or Client()
    sp_metadata = client.get(f"/sso/{slug}/saml/metadata/")
    assert sp_metadata.status_code == 200, sp_metadata.content[:500]
    idp.trust_sp(sp_metadata.content)
    return SamlSetup(idp=idp, slug=slug, client=client)


@pytest.fixture
def saml(db, tmp_path, sp_keys) -> SamlSetup:
    return make_setup(tmp_path)
