"""The login's one-query read (broker.login_lookup) returns exactly what the ORM returns, on
PostgreSQL (here) and on SQLite (the embedded default, in a subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.servers import ROOT

# Runs in this process (PostgreSQL) and, as a script, in the embedded mode (SQLite).
COMPARE = r'''
import datetime as dt
from django.contrib.auth import get_user_model
from django.utils import timezone
from broker import login_lookup
from broker.models import FederatedIdentity, IdentityProvider, Role, UserRole
from django.contrib.auth.models import Group


def compare():
    User = get_user_model()
    idp = IdentityProvider.objects.create(slug="corp", name="Corp", protocol="saml")
    other = IdentityProvider.objects.create(slug="other", name="Other", protocol="saml")
    user = User.objects.create(username="corp.alice", email="alice@corp.example", first_name="Ålice",
                               is_staff=True, last_login=timezone.now() - dt.timedelta(hours=3))
    user.set_unusable_password()
    user.save()
    FederatedIdentity.objects.create(idp=idp, subject="alice", user=user,
                                     last_login_at=timezone.now() - dt.timedelta(minutes=5),
                                     last_attributes={"groups": ["a", "b"], "email": ["alice@corp.example"]})
    FederatedIdentity.objects.create(idp=other, subject="alice", user=User.objects.create(username="x"))
    for name, source in (("portal_admin", "federation"), ("auditor", "manual")):
        role = Role.objects.create(name=name, group=Group.objects.create(name=name))
        UserRole.objects.create(user=user, role=role, source=source)

    link, found_user, held = login_lookup.find(idp.pk, "alice")
    orm = FederatedIdentity.objects.select_related("user").get(idp=idp, subject="alice")
    fields = lambda obj: {f.attname: getattr(obj, f.attname) for f in type(obj)._meta.concrete_fields}
    assert fields(link) == fields(orm), (fields(link), fields(orm))
    assert fields(found_user) == fields(orm.user), (fields(found_user), fields(orm.user))
    assert link.user is found_user and found_user.is_active is True and found_user.is_staff is True
    assert isinstance(link.last_login_at, dt.datetime) and link.last_login_at.tzinfo is not None
    assert not found_user.has_usable_password()
    expected = sorted(UserRole.objects.filter(user=user).values_list("role__name", "id", "source"))
    assert sorted((h.name, h.row_id, h.source) for h in held) == expected
    assert login_lookup.find(idp.pk, "bob") is None
    assert login_lookup.find(other.pk, "alice")[2] == []
    return "same as the ORM"
'''


@pytest.mark.django_db
def test_same_as_the_orm_on_postgresql():
    namespace: dict = {}
    exec(COMPARE, namespace)  # noqa: S102 - our own code, shared with the SQLite run
    assert namespace["compare"]() == "same as the ORM"


def test_same_as_the_orm_on_sqlite(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update({"BROKER_VAR_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "portal_sso.settings"})
    script = (
        "import django; django.setup()\n"
        "from django.conf import settings\n"
        "from django.core.management import call_command\n"
        "assert settings.DATABASES['default']['ENGINE'].endswith('sqlite3')\n"
        "call_command('migrate', verbosity=0)\n"
        + COMPARE + "\nimport json; print(json.dumps(compare()))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == "same as the ORM"
