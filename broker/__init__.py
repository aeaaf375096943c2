"""The federation broker: SAML SP + OIDC RP in front of the API management portal."""
