"""Break-glass accounts: local emergency administrators outside SSO (issue 6).

accounts.py (CLI services) · auth.py (login steps) · throttle.py (database delays) ·
sessions.py (database sessions, own cookie) · security_keys.py (WebAuthn) · alerts.py ·
backends.py (no password-only login) · views.py / urls.py (/breakglass/).
"""
