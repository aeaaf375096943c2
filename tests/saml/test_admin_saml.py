"""Registering a SAML IdP through the Django admin (paste, upload) and refreshing it."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from broker.models import AuditEvent, IdentityProvider
from tests.saml.idp import TestIdP

pytestmark = pytest.mark.django_db
URL = "/admin/broker/identityprovider/add-saml/"


@pytest.fixture
def admin(admin_user):
    client = Client()
    client.force_login(admin_user)
    return client


def test_changelist_links_to_registration(admin):
    assert URL.encode() in admin.get("/admin/broker/identityprovider/").content


def test_register_by_pasting_metadata(admin, tmp_path, sp_keys):
    idp = TestIdP(tmp_path)
    response = admin.post(URL, {"slug": "corp", "name": "Corp", "metadata_xml": idp.metadata_xml().decode(),
                                "attribute_map": "{}", "jit_allowed": "on"})
    assert response.status_code == 302, response.content[:2000]
    record = IdentityProvider.objects.get(slug="corp")
    assert record.config["entity_id"] == idp.entity_id
    event = AuditEvent.objects.get(action="idp.created")
    assert event.data["via"] == "admin"


def test_register_by_upload(admin, tmp_path, sp_keys):
    idp = TestIdP(tmp_path)
    upload = SimpleUploadedFile("idp.xml", idp.metadata_xml(), content_type="text/xml")
    response = admin.post(URL, {"slug": "up", "metadata_file": upload, "attribute_map": "{}"})
    assert response.status_code == 302
    assert IdentityProvider.objects.filter(slug="up", protocol="saml").exists()


def test_bad_metadata_is_refused_with_a_message(admin, sp_keys):
    response = admin.post(URL, {"slug": "bad", "metadata_xml": "<nope/>", "attribute_map": "{}"})
    assert response.status_code == 200
    assert b"Refused" in response.content
    assert not IdentityProvider.objects.filter(slug="bad").exists()
    assert not AuditEvent.objects.filter(action="idp.created").exists()


def test_two_sources_refused(admin, tmp_path, sp_keys):
    idp = TestIdP(tmp_path)
    response = admin.post(URL, {"slug": "x", "metadata_xml": idp.metadata_xml().decode(),
                                "metadata_url": "https://idp.example/md", "attribute_map": "{}"})
    assert response.status_code == 200 and b"exactly one" in response.content
