from django.apps import AppConfig


class BrokerConfig(AppConfig):
    name = "broker"
    verbose_name = "SSO broker"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.contrib.auth.signals import user_logged_in

        from broker.identity import update_last_login

        # Django's own receiver (same dispatch_uid) writes auth_user.last_login at every login;
        # ours keeps it to the minute, one write less on the login path.
        user_logged_in.disconnect(dispatch_uid="update_last_login")
        user_logged_in.connect(update_last_login, dispatch_uid="update_last_login")

        from broker import (
            checks,  # noqa: F401  (registers system checks)
            idp_cache,  # noqa: F401  (invalidates cached IdPs on change)
        )
