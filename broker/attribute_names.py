"""Well-known attribute names and the canonical names the broker uses for them.

SAML IdPs name the same attribute three ways: a plain name (``mail``), an OID URI
(``urn:oid:0.9.2342.19200300.100.1.3``, the SAML2 attribute profile used by Shibboleth
and most of eduGAIN) or a claim URI (ADFS and Entra ID,
``http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress``). OIDC providers
use the OIDC standard claim names. Everything is folded onto one vocabulary, so mapping
rules and the rest of the system never care where a login came from.

Pure data, no Django imports.
"""

from __future__ import annotations

# Canonical names (OIDC standard claims where one exists).
EMAIL = "email"
GROUPS = "groups"

_OID = "urn:oid:"
_XMLSOAP = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/"
_MS_2008 = "http://schemas.microsoft.com/ws/2008/06/identity/claims/"
_MS_IDENTITY = "http://schemas.microsoft.com/identity/claims/"
_XMLSOAP_2009 = "http://schemas.xmlsoap.org/claims/"

# OID (without the urn:oid: prefix) -> canonical name. Sources: RFC 4519 / RFC 4524
# (LDAP), the eduPerson schema, SCHAC, and the SAML2 attribute profiles.
OIDS: dict[str, str] = {
    "0.9.2342.19200300.100.1.1": "uid",
    "0.9.2342.19200300.100.1.3": EMAIL,  # mail
    "2.5.4.3": "name",  # cn
    "2.5.4.4": "family_name",  # sn
    "2.5.4.42": "given_name",  # givenName
    "2.16.840.1.113730.3.1.241": "display_name",  # displayName
    "2.5.4.10": "organization",  # o
    "2.5.4.11": "organizational_unit",  # ou
    "2.5.4.12": "title",
    "2.5.4.20": "phone_number",  # telephoneNumber
    "2.16.840.1.113730.3.1.3": "employee_number",
    "2.16.840.1.113730.3.1.39": "locale",  # preferredLanguage
    "1.3.6.1.4.1.5923.1.1.1.1": "affiliation",  # eduPersonAffiliation
    "1.3.6.1.4.1.5923.1.1.1.5": "primary_affiliation",
    "1.3.6.1.4.1.5923.1.1.1.6": "eppn",  # eduPersonPrincipalName
    "1.3.6.1.4.1.5923.1.1.1.7": "entitlement",  # eduPersonEntitlement
    "1.3.6.1.4.1.5923.1.1.1.9": "scoped_affiliation",
    "1.3.6.1.4.1.5923.1.1.1.10": "targeted_id",  # eduPersonTargetedID
    "1.3.6.1.4.1.5923.1.1.1.11": "assurance",
    "1.3.6.1.4.1.5923.1.1.1.13": "eduperson_unique_id",
    "1.3.6.1.4.1.5923.1.1.1.16": "orcid",
    "1.3.6.1.4.1.5923.1.5.1.1": GROUPS,  # isMemberOf
    "1.2.840.113556.1.2.102": GROUPS,  # memberOf (Active Directory)
    "1.3.6.1.4.1.25178.1.2.9": "home_organization",  # schacHomeOrganization
}

# Plain LDAP / SAML basic names -> canonical name.
PLAIN: dict[str, str] = {
    "mail": EMAIL,
    "emailAddress": EMAIL,
    "email": EMAIL,
    "cn": "name",
    "sn": "family_name",
    "surname": "family_name",
    "givenName": "given_name",
    "displayName": "display_name",
    "eduPersonPrincipalName": "eppn",
    "eduPersonAffiliation": "affiliation",
    "eduPersonScopedAffiliation": "scoped_affiliation",
    "eduPersonEntitlement": "entitlement",
    "eduPersonTargetedID": "targeted_id",
    "eduPersonUniqueId": "eduperson_unique_id",
    "isMemberOf": GROUPS,
    "memberOf": GROUPS,
    "telephoneNumber": "phone_number",
    "preferredLanguage": "locale",
    "schacHomeOrganization": "home_organization",
}

# ADFS / Entra ID claim URIs -> canonical name.
CLAIM_URIS: dict[str, str] = {
    _XMLSOAP + "emailaddress": EMAIL,
    _XMLSOAP + "name": "name",
    _XMLSOAP + "givenname": "given_name",
    _XMLSOAP + "surname": "family_name",
    _XMLSOAP + "upn": "upn",
    _XMLSOAP + "nameidentifier": "name_identifier",
    _XMLSOAP + "privatepersonalidentifier": "ppid",
    _XMLSOAP_2009 + "Group": GROUPS,
    _XMLSOAP_2009 + "CommonName": "name",
    _XMLSOAP_2009 + "EmailAddress": EMAIL,
    _MS_2008 + "groups": GROUPS,
    _MS_2008 + "role": "roles",
    _MS_2008 + "windowsaccountname": "windows_account_name",
    _MS_2008 + "primarysid": "primary_sid",
    _MS_IDENTITY + "objectidentifier": "oid",
    _MS_IDENTITY + "tenantid": "tenant_id",
    _MS_IDENTITY + "displayname": "display_name",
    _MS_IDENTITY + "identityprovider": "identity_provider",
    _MS_IDENTITY + "authnmethodsreferences": "amr",
}


def canonical_name(name: str) -> str:
    """The canonical name for a well-known attribute name, or the name unchanged."""
    if name in PLAIN:
        return PLAIN[name]
    if name in CLAIM_URIS:
        return CLAIM_URIS[name]
    if name.lower().startswith(_OID):
        oid = name[len(_OID):]
        return OIDS.get(oid, name)
    if name in OIDS:  # bare dotted OID, as some IdPs send it
        return OIDS[name]
    return name
