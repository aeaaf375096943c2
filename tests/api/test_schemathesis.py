"""Property-based run of schemathesis against the live Admin API, driven by its own OpenAPI
schema (/api/schema/), with an admin token: no operation may answer 5xx, whatever it is sent.

Bounded: at most MAX_EXAMPLES cases per operation, and a hard wall-clock limit on the run.
Outgoing calls the API would make for fuzzed IdP URLs go to a dead local proxy, never to the
Internet (the fake OpenID Provider on loopback stays reachable).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest

from broker import tokens
from broker.breakglass import accounts
from broker.login import complete_login
from broker.services import roles as role_service
from tests.audit.conftest import audit_files  # noqa: F401 (fixture)

MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "20"))
HARD_LIMIT_SECONDS = int(os.environ.get("SCHEMATHESIS_HARD_LIMIT", "600"))


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_no_server_errors(api, live_server, make_idp, make_role, make_principal, session_request,
                          settings, monkeypatch, tmp_path, audit_files):  # noqa: F811
    # audit_files: an audit signing key, so exports are served (without one they are a 503).
    # Some objects to find, change and delete.
    make_idp("corp")
    make_role("viewer")
    role_service.set_mapping(claim="groups", value="viewers", role="viewer", idp="corp", actor="test")
    complete_login(session_request(), make_principal(subject="carol", attributes={"groups": ["viewers"]}))
    accounts.create_account("bg-admin", actor="test", webauthn_link=False)
    # Fuzzed issuer / metadata URLs: fail fast and locally.
    settings.OIDC_HTTP_TIMEOUT = 2
    settings.SAML_METADATA_FETCH_TIMEOUT = 2
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    tokens.reset_caches()
    now = int(time.time())
    token = api.token(("api_admins",), sub="fuzzer", iat=now, exp=now + HARD_LIMIT_SECONDS + 300)
    assert api.client(token).get("/api/v1/roles/").status_code == 200

    report = tmp_path / "junit.xml"
    command = [
        sys.executable, "-m", "schemathesis.cli", "run", f"{live_server.url}/api/schema/",
        "--checks", "not_a_server_error", "--max-examples", str(MAX_EXAMPLES), "--workers", "1",
        "--phases", "examples,coverage,fuzzing", "--request-timeout", "30", "--no-shrink",
        "--suppress-health-check", "all", "--header", f"Authorization: Bearer {token}",
        "--report", "junit", "--report-junit-path", str(report),
    ]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path),
           "NO_PROXY": "*", "NO_COLOR": "1", "SCHEMATHESIS_HOOKS": ""}
    try:
        # cwd: schemathesis keeps a cache folder (.schemathesis/) in its working directory.
        result = subprocess.run(command, env=env, capture_output=True, text=True, cwd=tmp_path,
                                timeout=HARD_LIMIT_SECONDS)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"schemathesis exceeded {HARD_LIMIT_SECONDS}s:\n{(exc.stdout or '')[-4000:]}")
    output = result.stdout + result.stderr
    print(output[-4000:])  # shown with -s / -rP: the seed, the phases, the warnings
    assert result.returncode == 0, output[-8000:]
    counts = re.search(r"(\d+) generated, (\d+) passed", output)
    assert counts and int(counts[1]) == int(counts[2]) > 0, output[-2000:]
    assert "26 passed" in output, output[-2000:]
