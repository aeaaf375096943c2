"""Principal and attribute normalization (pure; no database)."""

from __future__ import annotations

import pytest

from broker.principal import Principal, normalize_attributes

ADFS = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/"
MS_GROUPS = "http://schemas.microsoft.com/ws/2008/06/identity/claims/groups"


def test_oid_names_are_normalized():
    attrs = normalize_attributes({
        "urn:oid:0.9.2342.19200300.100.1.3": ["alice@corp.example"],
        "urn:oid:1.3.6.1.4.1.5923.1.5.1.1": ["api_admins", "staff"],
        "urn:oid:1.3.6.1.4.1.5923.1.1.1.6": "alice@corp.example",
        "urn:oid:2.5.4.42": "Alice",
    })
    assert attrs["email"] == ("alice@corp.example",)
    assert attrs["groups"] == ("api_admins", "staff")
    assert attrs["eppn"] == ("alice@corp.example",)
    assert attrs["given_name"] == ("Alice",)
    assert not any(name.startswith("urn:oid:") for name in attrs)


def test_adfs_and_entra_claim_uris_are_normalized():
    attrs = normalize_attributes({
        ADFS + "emailaddress": "bob@corp.example",
        ADFS + "givenname": "Bob",
        ADFS + "surname": "Builder",
        MS_GROUPS: ["5f2c-guid", "api_admins"],
        "http://schemas.microsoft.com/identity/claims/tenantid": "tenant-1",
    })
    assert attrs == {
        "email": ("bob@corp.example",),
        "given_name": ("Bob",),
        "family_name": ("Builder",),
        "groups": ("5f2c-guid", "api_admins"),
        "tenant_id": ("tenant-1",),
    }


def test_plain_ldap_names_and_merge_without_duplicates():
    attrs = normalize_attributes({
        "mail": "c@corp.example",
        "isMemberOf": ["a", "b"],
        "memberOf": ["b", "c"],
    })
    assert attrs["email"] == ("c@corp.example",)
    assert attrs["groups"] == ("a", "b", "c")


def test_idp_map_wins_over_builtin_table_and_unknown_names_are_kept():
    attrs = normalize_attributes(
        {"urn:oid:0.9.2342.19200300.100.1.3": "x@y", "department": "ops", "team": ["t1"]},
        {"team": "groups", "urn:oid:0.9.2342.19200300.100.1.3": "backup_email"},
    )
    assert attrs == {"backup_email": ("x@y",), "department": ("ops",), "groups": ("t1",)}


def test_values_become_strings():
    attrs = normalize_attributes({"email_verified": True, "age": 42, "address": {"b": 1, "a": 2},
                                  "empty": None})
    assert attrs["email_verified"] == ("true",)
    assert attrs["age"] == ("42",)
    assert attrs["address"] == ('{"a":2,"b":1}',)
    assert attrs["empty"] == ()


def test_principal_is_frozen_and_keyed_by_idp_and_subject():
    p = Principal(idp="corp", protocol="saml", subject="alice", issuer="https://idp",
                  attributes={"email": ("a@x",)})
    assert p.key == ("corp", "alice")
    assert p.email == "a@x"
    with pytest.raises(AttributeError):
        p.subject = "mallory"  # type: ignore[misc]
    with pytest.raises(TypeError):
        p.attributes["email"] = ("evil@x",)  # type: ignore[index]


@pytest.mark.parametrize("subject", ["", "   ", "x" * 513])
def test_principal_refuses_unusable_subjects(subject):
    with pytest.raises(ValueError):
        Principal(idp="corp", protocol="oidc", subject=subject, issuer="https://idp")


def test_principal_refuses_unknown_protocol():
    with pytest.raises(ValueError):
        Principal(idp="corp", protocol="ldap", subject="a", issuer="x")
