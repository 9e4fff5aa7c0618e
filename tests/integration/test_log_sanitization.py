"""Log sanitization on every log path (spec 06 §5.8): the API process's loggers (root handlers,
uvicorn's access log, ``auditflow.*``), a Dagster op's ``context.log`` in an in-process run (the
run's event log in the database and its console output), and exception text. One filter
(:class:`auditflow_dagster.resources.http_errors.RedactSecrets`) does it; counters such as
``total_tokens`` stay readable.

(No ``from __future__ import annotations``: this module defines a Dagster op.)"""

import io
import logging
import subprocess
import sys

import pytest
from dagster import job, op
from starlette.testclient import TestClient

from api.app import create_app
from auditflow_dagster.resources.http_errors import RedactSecrets, redact_secrets

SECRETS = {
    "openai": "sk-proj-FAKE-test-value-not-a-key-0000",
    "bearer": "eyJhbGciOiJIUzI1NiJ9.c2VjcmV0cGFydA",
    "xi": "xi_secret_value_1",
    "api_key": "plainsecret42",
    "basic": "dXNlcjpwYXNzd29yZA",
    "signed_url": "deadbeefsig99",
    "afk": "Q" * 43,
    "password": "hunter2hunter2",
}
LINE = (f"calling provider with key {SECRETS['openai']}, headers Authorization: Bearer {SECRETS['bearer']}, "
        f"xi-api-key: {SECRETS['xi']}, url https://api.example.com/v1/x?api_key={SECRETS['api_key']}&page=2, "
        f"proxy authorization: Basic {SECRETS['basic']}, "
        f"audio https://cdn.example.com/a.mp3?X-Amz-Signature={SECRETS['signed_url']}, "
        f"sse /api/realtime/global?access_token=afk_0123abcd_{SECRETS['afk']}, "
        f"config {{'password': '{SECRETS['password']}'}}; usage total_tokens=1234 prompt_tokens: 56 tokens_used=7")
COUNTERS = ("total_tokens=1234", "prompt_tokens: 56", "tokens_used=7")


def _assert_clean(text: str, *, expect_counters: bool = True) -> None:
    for name, secret in SECRETS.items():
        assert secret not in text, (name, text[:2000])
    if expect_counters:
        for counter in COUNTERS:
            assert counter in text, (counter, text[:2000])


def test_redact_secrets_rules():
    out = redact_secrets(LINE)
    _assert_clean(out)
    assert "Bearer [REDACTED]" in out and "sk-proj-[REDACTED]" in out and "access_token=[REDACTED]" in out
    assert redact_secrets(f"key afk_0123abcd_{SECRETS['afk']}") == "key afk_0123abcd_[REDACTED]"
    assert "https://api.example.com/v1/x?<redacted>" in out
    assert redact_secrets("https://user:pw@host.example/p") == "https://[REDACTED]@host.example/p"
    assert redact_secrets('{"refresh_token": "abc", "invite_token": "def", "tokens": 3}') == \
        '{"refresh_token": "[REDACTED]", "invite_token": "[REDACTED]", "tokens": 3}'
    assert redact_secrets("cookie: sid=1") == "cookie: [REDACTED]"
    # ordinary words are left alone
    for text in ("key: step 3 failed", "token budget reached", "completed 5/5 steps, score 80"):
        assert redact_secrets(text) == text
    assert redact_secrets(redact_secrets(LINE)) == redact_secrets(LINE)  # idempotent


@pytest.fixture()
def captured():
    """A handler on the root logger, added like an operator's own would be."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def test_api_process_log_paths(db, captured):
    app = create_app(dagster_url="http://127.0.0.1:9/graphql")  # installs the filter everywhere
    root = logging.getLogger()
    assert any(isinstance(f, RedactSecrets) for f in root.filters)
    with TestClient(app, raise_server_exceptions=False) as client:
        # a request whose URL carries a token (as an EventSource's would) and whose error is logged
        client.get(f"/api/realtime/stream?channels=bad%20channel&access_token=afk_0123abcd_{SECRETS['afk']}")
    # (uvicorn's loggers stop propagating once uvicorn configured logging: see the access-log test)
    for name in ("auditflow.api", "auditflow.automation", "auditflow.api.chat", "httpx", "dagster",
                 "openai", "some.library"):
        logging.getLogger(name).warning("%s says: %s", name, LINE)
    # %-args, exception text and a stack are scrubbed too
    try:
        raise RuntimeError(f"provider said Authorization: Bearer {SECRETS['bearer']} api_key={SECRETS['api_key']}")
    except RuntimeError:
        logging.getLogger("auditflow.api").exception("call failed for %s", f"xi-api-key={SECRETS['xi']}")
    text = captured.getvalue()
    assert text.count("says:") == 7
    _assert_clean(text)
    assert "RuntimeError: provider said Authorization: Bearer [REDACTED]" in text


def test_uvicorn_access_log_line_is_scrubbed(db):
    """uvicorn's access logger does not propagate and has its own handler: the filter is on it."""
    from logging.config import dictConfig

    import uvicorn.config  # noqa: F401 - the access logger's configuration lives here
    from uvicorn.config import LOGGING_CONFIG

    dictConfig(LOGGING_CONFIG)  # what uvicorn does before it loads the app factory
    stream = io.StringIO()
    access = logging.getLogger("uvicorn.access")
    access.handlers[0].setStream(stream)
    try:
        create_app(dagster_url="http://127.0.0.1:9/graphql")
        access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET",
                    f"/api/realtime/global?access_token=afk_0123abcd_{SECRETS['afk']}", "1.1", 200)
        assert '"GET /api/realtime/global?access_token=[REDACTED] HTTP/1.1" 200' in stream.getvalue()
        _assert_clean(stream.getvalue(), expect_counters=False)
    finally:
        access.handlers[0].setStream(sys.stderr)


@op
def leaky_op(context):
    context.log.info(LINE)
    context.log.warning(f"retrying with api_key={SECRETS['api_key']} (total_tokens=1234)")
    logging.getLogger("auditflow.stt").error("provider error: %s", f"xi-api-key: {SECRETS['xi']}")
    try:
        raise ValueError(f"upstream 401 for Bearer {SECRETS['bearer']}")
    except ValueError as exc:
        context.log.error(f"step failed: {exc}")


@job
def leaky_job():
    leaky_op()


def test_dagster_context_log_is_scrubbed_in_the_event_log_and_console(dagster_instance, capfd, captured):
    import auditflow_dagster.resources.http_errors  # noqa: F401 - what every code location imports

    result = leaky_job.execute_in_process(instance=dagster_instance)
    assert result.success
    records = dagster_instance.all_logs(result.run_id)
    messages = "\n".join(r.user_message or "" for r in records) + "\n".join(r.message or "" for r in records)
    assert "step failed: upstream 401 for Bearer [REDACTED]" in messages
    _assert_clean(messages)
    out, err = capfd.readouterr()
    assert "step failed" in out + err  # Dagster's console logger wrote the lines
    _assert_clean(out + err)
    _assert_clean(captured.getvalue(), expect_counters=False)


def test_a_dagster_code_location_process_installs_the_filter():
    """Code servers and run workers load ``auditflow_dagster.definitions``: that alone installs the
    scrubbing record factory (so ``context.log`` text is clean before any handler or the event
    log sees it)."""
    code = ("import logging, auditflow_dagster.definitions\n"
            "print(getattr(logging.getLogRecordFactory(), '_auditflow_redacting', False))\n"
            "logging.basicConfig(level=logging.INFO)\n"
            "logging.getLogger('dagster').info('key sk-FAKE-test-value-not-a-key-1111 and total_tokens=9')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().endswith("True")
    assert "sk-FAKE-test-value-not-a-key-1111" not in proc.stderr and "total_tokens=9" in proc.stderr
