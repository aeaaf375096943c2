"""Administrative operations shared by the CLI, the Django admin and the Admin API.

Each function changes state and records the audit event in one transaction.
"""
