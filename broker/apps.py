from django.apps import AppConfig


class BrokerConfig(AppConfig):
    name = "broker"
    verbose_name = "SSO broker"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from broker import checks  # noqa: F401  (registers system checks)
