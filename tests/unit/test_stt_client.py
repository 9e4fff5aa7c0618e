"""ElevenLabsClient against a fake ElevenLabs API + recording store over real HTTP (spec 02 §2)."""

from __future__ import annotations

import asyncio
import logging
import math
import tempfile
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

from auditflow_dagster.resources.stt import (
    EMPTY_AUDIO_MESSAGE,
    MISSING_KEY_MESSAGE,
    ElevenLabsClient,
    SampleSttClient,
    SttError,
    SttResource,
    Transcription,
    backoff_delay,
    extract_transcription,
)
from tests.fakes.elevenlabs import FAKE_AUDIO, FakeElevenLabs, provider_body
from tests.fakes.server import Reply, free_port_refusing, serve_app

KEY = "xi-test-key-123456"
SIGNED = "?X-Amz-Signature=deadbeefcafe&X-Amz-Credential=AKIAFAKE&Expires=1700000000"


class RecordingSleep:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
def eleven(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeElevenLabs, str]]:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # temp audio files land here
    fake = FakeElevenLabs(api_key=KEY)
    with serve_app(fake.app) as url:
        yield fake, url


def transcribe(client: ElevenLabsClient, url: str) -> Transcription:
    async def go() -> Transcription:
        async with client:
            return await client.transcribe(url)

    return asyncio.run(go())


def make(base: str, sleep: RecordingSleep, **kw: Any) -> ElevenLabsClient:
    return ElevenLabsClient(kw.pop("api_key", KEY), base_url=base, sleep=sleep, **kw)


def assert_clean(message: str) -> None:
    for forbidden in (KEY, "X-Amz", "Signature", "deadbeef", "AKIAFAKE", "?", "xi-api-key"):
        assert forbidden not in message, (forbidden, message)
    assert "\n" not in message


# --- happy path ------------------------------------------------------------------------------


def test_download_then_multipart_upload(eleven: tuple[FakeElevenLabs, str], tmp_path: Path) -> None:
    fake, base = eleven
    sleep = RecordingSleep()
    result = transcribe(make(base, sleep), f"{base}/audio/call.mp3{SIGNED}")

    (download,) = fake.downloads
    assert download["path"] == "/audio/call.mp3"
    assert "X-Amz-Signature=deadbeefcafe" in download["query"]  # the signed URL is used as is
    assert "xi-api-key" not in download["headers"]  # the key never goes to the recording host

    (upload,) = fake.uploads
    assert upload["headers"]["xi-api-key"] == KEY
    assert upload["headers"]["content-type"].startswith("multipart/form-data")
    assert upload["query"] == ""  # the provider never receives the recording URL
    fields = upload["fields"]
    assert set(fields) == {"file", "model_id", "language_code", "timestamps_granularity", "diarize"}
    assert fields["file"]["filename"] == "audio.mp3"
    assert fields["file"]["content_type"] == "audio/mpeg"
    assert fields["file"]["data"] == FAKE_AUDIO
    assert {k: fields[k]["value"] for k in ("model_id", "language_code", "timestamps_granularity", "diarize")} == {
        "model_id": "scribe_v1",
        "language_code": "fra",
        "timestamps_granularity": "word",
        "diarize": "true",
    }
    assert KEY.encode() not in fields["file"]["data"]

    assert result.transcription_id == "tr_fake_0001"
    assert result.language_code == "fra" and result.language_probability == pytest.approx(0.98)
    assert [w["text"] for w in result.words] == ["Bonjour,", " ", "(rires)", "enregistré."]
    assert result.words[0] == {"text": "Bonjour,", "start": 0.1, "end": 0.6, "type": "word", "speaker_id": "speaker_0", "logprob": -0.1}
    assert "speaker_id" in result.words[1] and "logprob" not in result.words[1]
    assert sleep.delays == []
    assert list(tmp_path.glob("auditflow-audio-*")) == []  # temp file removed


def test_model_id_is_configurable_and_redirects_are_followed(eleven: tuple[FakeElevenLabs, str]) -> None:
    fake, base = eleven
    transcribe(make(base, RecordingSleep(), model_id="scribe_v2"), f"{base}/redirect/call.mp3?sig=1")
    assert fake.uploads[0]["fields"]["model_id"]["value"] == "scribe_v2"
    assert fake.uploads[0]["fields"]["file"]["data"] == FAKE_AUDIO


# --- retries ---------------------------------------------------------------------------------


def test_backoff_formula() -> None:
    assert [backoff_delay(n, base=2, maximum=60, retry_after=None) for n in range(1, 8)] == [2, 4, 8, 16, 32, 60, 60]
    assert backoff_delay(1, base=2, maximum=60, retry_after=9.2) == 10  # ceil(max(2, 9.2))
    assert backoff_delay(3, base=2, maximum=60, retry_after=3) == 8
    assert backoff_delay(1, base=0.1, maximum=60, retry_after=None) == 1  # at least 1 s
    assert backoff_delay(1, base=0.1, maximum=60, retry_after=0.2) == 1


def test_retries_429_with_retry_after_and_5xx_then_succeeds(eleven: tuple[FakeElevenLabs, str]) -> None:
    fake, base = eleven
    fake.stt_script.extend(
        [
            Reply(429, json={"detail": {"status": "rate_limited", "message": "Too many"}}, headers={"Retry-After": "7"}),
            Reply(503, text="busy"),
            Reply(408, json={"message": "timeout"}),
        ]
    )
    sleep = RecordingSleep()
    result = transcribe(make(base, sleep), f"{base}/audio/call.mp3")
    assert result.transcription_id == "tr_fake_0001"
    assert sleep.delays == [7, 4, 8]  # ceil(max(2,7)), 2·2^1, 2·2^2
    assert len(fake.uploads) == 4
    assert len(fake.downloads) == 4  # every attempt downloads again


def test_exhausted_attempts_raise_last_error(eleven: tuple[FakeElevenLabs, str]) -> None:
    fake, base = eleven
    fake.stt_script.extend([Reply(500, json={"error": "internal"})] * 3)
    sleep = RecordingSleep()
    with pytest.raises(SttError) as ei:
        transcribe(make(base, sleep, max_attempts=3), f"{base}/audio/call.mp3{SIGNED}")
    err = ei.value
    assert err.status == 500 and err.retryable
    assert str(err) == "ElevenLabs speech-to-text failed status=500 provider_message=internal"
    assert sleep.delays == [2, 4]
    assert len(fake.uploads) == 3


def test_download_5xx_is_retried_like_the_provider(eleven: tuple[FakeElevenLabs, str]) -> None:
    fake, base = eleven
    fake.download_script.append(Reply(502, text="bad gateway"))
    sleep = RecordingSleep()
    transcribe(make(base, sleep), f"{base}/audio/call.mp3")
    assert sleep.delays == [2]
    assert len(fake.downloads) == 2 and len(fake.uploads) == 1


def test_transport_timeout_is_retried(eleven: tuple[FakeElevenLabs, str]) -> None:
    fake, base = eleven
    fake.download_script.append(Reply(200, json={}, delay=1.5))
    sleep = RecordingSleep()
    result = transcribe(make(base, sleep, download_timeout=0.3), f"{base}/audio/call.mp3{SIGNED}")
    assert result.transcription_id == "tr_fake_0001"
    assert sleep.delays == [2]
    assert len(fake.uploads) == 1


def test_connection_refused_to_provider(eleven: tuple[FakeElevenLabs, str]) -> None:
    fake, base = eleven
    sleep = RecordingSleep()
    with pytest.raises(SttError) as ei:
        transcribe(make(free_port_refusing(), sleep, max_attempts=2), f"{base}/audio/call.mp3{SIGNED}")
    err = ei.value
    assert str(err) == "ElevenLabs speech-to-text failed code=ECONNREFUSED"
    assert err.retryable and err.status is None
    assert sleep.delays == [2]
    assert_clean(str(err))


def test_deadline_stops_sleeping(eleven: tuple[FakeElevenLabs, str]) -> None:
    fake, base = eleven
    fake.stt_script.append(Reply(429, headers={"Retry-After": "30"}))
    sleep = RecordingSleep()
    with pytest.raises(SttError) as ei:
        transcribe(make(base, sleep, deadline_seconds=10), f"{base}/audio/call.mp3")
    assert ei.value.status == 429 and ei.value.retry_after == 30
    assert sleep.delays == [] and len(fake.uploads) == 1


# --- non-retryable failures and sanitisation --------------------------------------------------


def test_401_is_not_retried_and_hints_at_the_key(eleven: tuple[FakeElevenLabs, str]) -> None:
    fake, base = eleven
    wrong = "xi-wrong-key-999999"
    sleep = RecordingSleep()
    with pytest.raises(SttError) as ei:
        transcribe(make(base, sleep, api_key=f"  '{wrong}' "), f"{base}/audio/call.mp3{SIGNED}")
    err = ei.value
    assert fake.uploads[0]["headers"]["xi-api-key"] == wrong  # normalised: quotes and spaces removed
    assert err.status == 401 and not err.retryable
    assert "ELEVENLABS_API_KEY" in str(err)
    assert "provider_message=Invalid API key" in str(err)
    assert wrong not in str(err)
    assert_clean(str(err))
    assert sleep.delays == [] and len(fake.uploads) == 1


def test_4xx_other_than_408_429_fails_immediately(eleven: tuple[FakeElevenLabs, str]) -> None:
    fake, base = eleven
    fake.stt_script.append(Reply(422, json={"detail": [{"msg": "bad"}], "message": "Unprocessable"}))
    sleep = RecordingSleep()
    with pytest.raises(SttError) as ei:
        transcribe(make(base, sleep), f"{base}/audio/call.mp3")
    assert ei.value.status == 422 and not ei.value.retryable
    assert str(ei.value) == "ElevenLabs speech-to-text failed status=422 provider_message=Unprocessable"
    assert sleep.delays == []


def test_provider_message_never_leaks_key_or_signed_query(eleven: tuple[FakeElevenLabs, str]) -> None:
    fake, base = eleven
    leaky = f"could not fetch https://bucket.example.invalid/a.mp3{SIGNED} using key {KEY}\n" + "x" * 2000
    fake.stt_script.append(Reply(400, json={"detail": leaky}))
    with pytest.raises(SttError) as ei:
        transcribe(make(base, RecordingSleep()), f"{base}/audio/call.mp3{SIGNED}")
    msg = str(ei.value)
    assert_clean(msg)
    assert "https://bucket.example.invalid/a.mp3" in msg  # path kept, query dropped
    assert len(msg.split("provider_message=", 1)[1]) <= 500


def test_expired_signed_url_download_is_not_retried(eleven: tuple[FakeElevenLabs, str]) -> None:
    fake, base = eleven
    fake.download_script.append(
        Reply(403, text=f"<Error><Code>AccessDenied</Code><StringToSign>{SIGNED}</StringToSign></Error>")
    )
    sleep = RecordingSleep()
    with pytest.raises(SttError) as ei:
        transcribe(make(base, sleep), f"{base}/audio/call.mp3{SIGNED}")
    assert str(ei.value) == "Audio download failed status=403"
    assert not ei.value.retryable and sleep.delays == [] and fake.uploads == []


def test_zero_byte_audio_fails_before_upload(eleven: tuple[FakeElevenLabs, str]) -> None:
    fake, base = eleven
    sleep = RecordingSleep()
    with pytest.raises(SttError) as ei:
        transcribe(make(base, sleep), f"{base}/audio/empty.mp3")
    assert str(ei.value) == EMPTY_AUDIO_MESSAGE == "Audio download returned empty body"
    assert not ei.value.retryable
    assert fake.uploads == [] and sleep.delays == []


def test_missing_key_is_a_non_retryable_config_error(eleven: tuple[FakeElevenLabs, str]) -> None:
    fake, base = eleven
    for key in ("", "   ", '""', "' '"):
        with pytest.raises(SttError) as ei:
            transcribe(make(base, RecordingSleep(), api_key=key), f"{base}/audio/call.mp3")
        assert str(ei.value) == MISSING_KEY_MESSAGE and not ei.value.retryable
    assert fake.downloads == [] and fake.uploads == []


def test_non_object_body_is_not_retried(eleven: tuple[FakeElevenLabs, str]) -> None:
    fake, base = eleven
    fake.stt_script.append(Reply(200, json=["not", "an", "object"]))
    sleep = RecordingSleep()
    with pytest.raises(SttError) as ei:
        transcribe(make(base, sleep), f"{base}/audio/call.mp3")
    assert not ei.value.retryable and sleep.delays == []


def test_surrogate_id_when_transcription_id_missing(
    eleven: tuple[FakeElevenLabs, str], caplog: pytest.LogCaptureFixture
) -> None:
    fake, base = eleven
    fake.response_body = provider_body(transcription_id=None)
    with caplog.at_level(logging.WARNING, logger="auditflow_dagster.resources.stt"):
        result = transcribe(make(base, RecordingSleep()), f"{base}/audio/call.mp3{SIGNED}")
    assert result.transcription_id.startswith("local-")
    assert uuid.UUID(result.transcription_id[len("local-") :]).version == 4
    assert any(result.transcription_id in r.getMessage() for r in caplog.records)
    for record in caplog.records:
        assert_clean(record.getMessage())


def test_blank_url_fails_without_network() -> None:
    with pytest.raises(SttError) as ei:
        asyncio.run(ElevenLabsClient(KEY, base_url=free_port_refusing()).transcribe("  "))
    assert not ei.value.retryable


# --- extraction rules ------------------------------------------------------------------------


def test_extract_transcription_rules() -> None:
    t = extract_transcription(
        {
            "transcription_id": "  ",
            "text": 42,
            "language_code": "",
            "language_probability": True,
            "words": [
                {"text": "a", "start": 0, "end": 1, "type": "word", "logprob": math.nan, "speaker_id": 3},
                {"text": "b", "start": math.inf, "end": 1, "type": "word"},
                {"text": "c", "start": True, "end": 1, "type": "word"},
                None,
            ],
            "extra": "ignored",
        }
    )
    assert t.transcription_id.startswith("local-")
    assert t.text == "" and t.language_code is None and t.language_probability is None
    assert t.words == [{"text": "a", "start": 0.0, "end": 1.0, "type": "word"}]
    assert extract_transcription({"transcription_id": "x", "words": "nope", "language_probability": 0.5}).words == []
    with pytest.raises(SttError):
        extract_transcription("text body")


# --- resource and sample twin ----------------------------------------------------------------


def test_resource_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from auditflow_dagster.settings import Settings

    monkeypatch.setenv("AUDITFLOW_STT", "elevenlabs")
    monkeypatch.setenv("ELEVENLABS_API_KEY", f'  "{KEY}" ')
    monkeypatch.setenv("TRANSCRIPTION_ELEVENLABS_MAX_ATTEMPTS", "0")
    monkeypatch.setenv("TRANSCRIPTION_ELEVENLABS_BACKOFF_BASE_SECONDS", "0.2")
    monkeypatch.setenv("TRANSCRIPTION_ELEVENLABS_BACKOFF_MAX_SECONDS", "0.5")
    resource = SttResource.from_settings(Settings())
    assert KEY not in repr(resource)
    client = resource.client()
    assert isinstance(client, ElevenLabsClient)
    assert client._api_key == KEY
    assert KEY not in repr(client)
    assert client.max_attempts == 1  # min 1
    assert client.backoff_base == 1.0 and client.backoff_max == 1.0  # base min 1, max ≥ base
    assert isinstance(SttResource(mode="sample").client(), SampleSttClient)
    with pytest.raises(ValueError):
        SttResource(mode="whisper").client()


def test_sample_client_is_deterministic() -> None:
    pytest.importorskip("auditflow_dagster.sample.generator")
    from datetime import date

    from auditflow_dagster.sample import generator

    fiche_id = generator.fiche_id_for(date(2025, 1, 6), 0)
    url = generator.recordings_for_fiche(fiche_id)[0]["recording_url"]

    async def go() -> tuple[Transcription, Transcription]:
        c = SampleSttClient()
        return await c.transcribe(url), await c.transcribe(url)

    a, b = asyncio.run(go())
    assert a == b
    assert a.transcription_id and a.text and a.words
    assert a == extract_transcription(generator.transcript_for_recording_url(url))
    assert all({"text", "start", "end", "type"} <= set(w) for w in a.words)
    with pytest.raises(SttError):
        asyncio.run(SampleSttClient().transcribe(""))
    with pytest.raises(SttError) as ei:
        asyncio.run(SampleSttClient().transcribe("https://rec.example.invalid/unknown.mp3"))
    assert ei.value.status == 404 and not ei.value.retryable


def test_rate_hook_runs_before_every_attempt(eleven: tuple[FakeElevenLabs, str]) -> None:
    """The system-wide start-rate token is taken for each provider attempt, retries included."""
    fake, base = eleven
    fake.stt_script.extend([Reply(503, json={"detail": "busy"})])
    calls: list[int] = []

    async def token() -> None:
        calls.append(len(fake.uploads))

    result = transcribe(make(base, RecordingSleep(), max_attempts=3, before_attempt=token), f"{base}/audio/call.mp3")
    assert result.text and calls == [0, 1]  # before attempt 1 (no upload yet) and before attempt 2


def test_audio_over_the_size_limit_is_refused_without_upload(eleven: tuple[FakeElevenLabs, str]) -> None:
    fake, base = eleven
    with pytest.raises(SttError) as info:
        transcribe(make(base, RecordingSleep(), max_audio_bytes=1000), f"{base}/audio/call.mp3?sig=1")
    assert "over the 1000-byte limit" in str(info.value) and not info.value.retryable
    assert fake.uploads == [] and len(fake.downloads) == 1  # not retried, nothing sent to the provider
    assert transcribe(make(base, RecordingSleep(), max_audio_bytes=len(FAKE_AUDIO)), f"{base}/audio/call.mp3").text
