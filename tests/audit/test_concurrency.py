"""Several processes writing at once: the chain verifies and no sequence number is missing."""

from __future__ import annotations

import subprocess
import sys

import pytest

from broker.audit import chain
from broker.audit.verify import verify_database
from broker.models import AuditEvent

from .conftest import REPO, subprocess_env

pytestmark = pytest.mark.django_db(transaction=True)

WRITER = """
import sys
from django.db import transaction
from broker import audit
n = int(sys.argv[1])
for i in range(200):
    if i % 3 == 0:
        audit.record("test.concurrent", actor=f"writer{n}", i=i)  # autocommit
    else:
        with transaction.atomic():  # like a login: the event inside the action's transaction
            audit.record("test.concurrent", actor=f"writer{n}", i=i)
            if i % 10 == 1:
                audit.record("test.concurrent.second", actor=f"writer{n}", i=i)
    if i % 25 == 7:
        try:
            with transaction.atomic():  # a failed action takes its event with it
                audit.record("test.rolled_back", actor=f"writer{n}", i=i)
                raise RuntimeError
        except RuntimeError:
            pass
"""


def test_four_processes_writing_concurrently_keep_one_gap_free_chain(audit_files, tmp_path):
    script = tmp_path / "writer.py"
    script.write_text("import django, sys\ndjango.setup()\n" + WRITER)
    env = subprocess_env(DJANGO_SETTINGS_MODULE="portal_sso.settings", PYTHONPATH=str(REPO),
                         AUDIT_SIGNING_KEY_FILE=str(audit_files.key),
                         AUDIT_CHECKPOINT_SINK=str(audit_files.sink), AUDIT_CHECKPOINT_EVERY="100",
                         LOG_LEVEL="WARNING")
    procs = [subprocess.Popen([sys.executable, str(script), str(n)], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for n in range(4)]
    for proc in procs:
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
        assert "Traceback" not in err, err

    expected = 4 * (200 + 14)  # 200 events and 14 second events per writer (i % 10 == 1, not i % 3 == 0)
    assert AuditEvent.objects.filter(action__startswith="test.concurrent").count() == expected
    assert not AuditEvent.objects.filter(action="test.rolled_back").exists()
    # Sealed by the writers themselves (inline, the leader, or at exit): nothing left over.
    assert chain.unsealed_count() == 0
    seqs = list(AuditEvent.objects.order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, expected + 1))  # every event sealed, no gap, no duplicate

    from broker.audit import signing

    key = signing.load_public(audit_files.public)
    report = verify_database(public_keys={signing.fingerprint(key): key})
    assert report.ok, report.text()
    assert report.summary["checkpoints checked"] >= 1  # every 100 events, from the writers themselves
