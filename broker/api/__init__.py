"""The Admin API (Django REST framework) under ``/api/v1/``, its OpenAPI schema and docs.

Thin by design: serializers validate input, views call ``broker.services`` (and the protocol
adapters' ``register``/``refresh``), so every change is audited exactly as from the CLI or
the Django admin.
"""
