"""ElevenLabs speech-to-text client (spec 02 §2) and its deterministic "sample" twin.

:class:`ElevenLabsClient.transcribe` downloads the recording (streamed to a temp file, the provider
never sees the URL), uploads it as multipart to ``{base}/v1/speech-to-text`` and extracts the
transcription. Its retry loop is the *only* retry layer for provider calls.

Security: raw HTTP-client exceptions are never propagated or logged — they can carry the
``xi-api-key`` header and the signed recording URL. Every failure becomes a one-line
:class:`SttError` built from status / transport code / a ≤500-char provider message.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import re
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import httpx
from dagster import ConfigurableResource
from pydantic import Field

from auditflow_dagster.resources.http_errors import parse_retry_after, transport_code
from auditflow_dagster.resources.secrets import resolve_secret, secret_field_value
from auditflow_dagster.settings import normalize_secret

logger = logging.getLogger(__name__)

STT_PREFIX = "ElevenLabs speech-to-text failed"
DOWNLOAD_PREFIX = "Audio download failed"
MISSING_KEY_MESSAGE = "ElevenLabs API key missing (ELEVENLABS_API_KEY)"
EMPTY_AUDIO_MESSAGE = "Audio download returned empty body"
KEY_HINT = " (check ELEVENLABS_API_KEY)"
LANGUAGE_CODE = "fra"
PROVIDER_MESSAGE_MAX = 500
DOWNLOAD_CONNECT_TIMEOUT = 10.0
#: ElevenLabs accepts files up to 1 GB; a larger body is refused before it fills the disk.
MAX_AUDIO_BYTES = 1_000_000_000
_CHUNK = 64 * 1024

SleepFn = Callable[[float], Awaitable[Any]]


# ---------------------------------------------------------------------------------------------
# Errors and sanitisation
# ---------------------------------------------------------------------------------------------


class SttError(Exception):
    """A sanitised transcription failure (message is a single line without secrets or URLs)."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        retryable: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.retry_after = retry_after
        self.retryable = retryable

    def __str__(self) -> str:
        return self.message


_URL_RE = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s\"'<>]+")
_QUERY_RE = re.compile(r"\?[^\s\"'<>]*")


def _strip_urls(text: str) -> str:
    """Replace URLs by their scheme://host/path (query and fragment removed)."""

    def _one(m: re.Match[str]) -> str:
        return re.split(r"[?#]", m.group(0), maxsplit=1)[0]

    return _URL_RE.sub(_one, text)


def sanitize_text(text: str, *, secrets: tuple[str, ...] = (), limit: int = PROVIDER_MESSAGE_MAX) -> str:
    """One line, secrets redacted, URL queries removed, trimmed and cut to ``limit`` characters."""
    t = " ".join(str(text).split())
    for s in secrets:
        if s and len(s) >= 4:
            t = t.replace(s, "[redacted]")
    t = _strip_urls(t)
    return t.strip()[:limit]


def provider_message(body: Any) -> str | None:
    """First non-empty string among ``detail``/``message``/``error``/``error_message``/``reason``.

    ``detail`` (or ``error``) given as an object contributes its own ``message``; a string body is
    used as is. The caller sanitises and cuts it.
    """
    if isinstance(body, str):
        return body.strip() or None
    if not isinstance(body, dict):
        return None
    for key in ("detail", "message", "error", "error_message", "reason"):
        v = body.get(key)
        if isinstance(v, dict):
            v = v.get("message")
        if isinstance(v, str) and v.strip():
            return v.strip()
    return None


def _response_body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except Exception:  # noqa: BLE001
        try:
            return response.text
        except Exception:  # noqa: BLE001
            return None


def is_retryable_status(status: int) -> bool:
    return status in (408, 429) or status >= 500


def http_error(prefix: str, response: httpx.Response, *, secrets: tuple[str, ...] = (), body: Any = None) -> SttError:
    status = response.status_code
    msg = f"{prefix} status={status}"
    pm = provider_message(body if body is not None else _response_body(response))
    if pm:
        msg += f" provider_message={sanitize_text(pm, secrets=secrets)}"
    if status == 401 and prefix == STT_PREFIX:
        msg += KEY_HINT
    return SttError(
        msg,
        status=status,
        retry_after=parse_retry_after(response.headers.get("retry-after")),
        retryable=is_retryable_status(status),
    )


def transport_error(prefix: str, exc: BaseException) -> SttError:
    retryable = not isinstance(exc, (httpx.UnsupportedProtocol, httpx.InvalidURL, httpx.TooManyRedirects))
    if isinstance(exc, (httpx.UnsupportedProtocol, httpx.InvalidURL)):
        return SttError(f"{prefix}: invalid URL", retryable=False)
    if isinstance(exc, httpx.TooManyRedirects):
        return SttError(f"{prefix}: too many redirects", retryable=False)
    return SttError(f"{prefix} code={transport_code(exc)}", retryable=retryable)


# ---------------------------------------------------------------------------------------------
# Response extraction
# ---------------------------------------------------------------------------------------------


@dataclass
class Transcription:
    transcription_id: str
    text: str
    language_code: str | None
    language_probability: float | None
    words: list[dict[str, Any]] = field(default_factory=list)

    def to_payload(self) -> dict[str, Any]:
        """ElevenLabs-shaped dict (what is stored as the transcription payload)."""
        return {
            "transcription_id": self.transcription_id,
            "text": self.text,
            "language_code": self.language_code,
            "language_probability": self.language_probability,
            "words": [dict(w) for w in self.words],
        }


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _clean_word(w: Any) -> dict[str, Any] | None:
    if not isinstance(w, dict):
        return None
    text, start, end, typ = w.get("text"), w.get("start"), w.get("end"), w.get("type")
    if not isinstance(text, str) or not _finite(start) or not _finite(end) or not isinstance(typ, str):
        return None
    out: dict[str, Any] = {"text": text, "start": float(start), "end": float(end), "type": typ}
    if isinstance(w.get("speaker_id"), str):
        out["speaker_id"] = w["speaker_id"]
    if _finite(w.get("logprob")):
        out["logprob"] = float(w["logprob"])
    return out


def extract_transcription(body: Any) -> Transcription:
    """Apply the spec 02 §2 "Response" rules. A non-object body is a non-retryable error."""
    if not isinstance(body, dict):
        raise SttError(f"{STT_PREFIX}: response is not a JSON object", retryable=False)
    tid = body.get("transcription_id")
    if not isinstance(tid, str) or not tid.strip():
        tid = f"local-{uuid.uuid4()}"
        logger.warning("ElevenLabs response has no transcription_id; using surrogate %s", tid)
    text = body.get("text")
    lang = body.get("language_code")
    prob = body.get("language_probability")
    raw_words = body.get("words")
    words = [cw for cw in (_clean_word(w) for w in (raw_words if isinstance(raw_words, list) else [])) if cw]
    return Transcription(
        transcription_id=tid,
        text=text if isinstance(text, str) else "",
        language_code=lang if isinstance(lang, str) and lang.strip() else None,
        language_probability=float(prob) if _finite(prob) else None,
        words=words,
    )


# ---------------------------------------------------------------------------------------------
# The real client
# ---------------------------------------------------------------------------------------------


def backoff_delay(attempt: int, *, base: float, maximum: float, retry_after: float | None) -> int:
    """``ceil(max(min(MAX, BASE·2^(n−1)), retry_after or 0))``, at least 1 s (``attempt`` is 1-based)."""
    d = max(min(maximum, base * (2 ** (attempt - 1))), retry_after or 0.0)
    return max(1, math.ceil(d))


class ElevenLabsClient:
    """Download + upload + extract, with the spec's retry loop. ``deadline_seconds`` bounds the whole call."""

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = "https://api.elevenlabs.io",
        model_id: str = "scribe_v1",
        download_timeout: float = 120.0,
        provider_timeout: float = 600.0,
        max_attempts: int = 6,
        backoff_base: float = 2.0,
        backoff_max: float = 60.0,
        sleep: SleepFn = asyncio.sleep,
        deadline_seconds: float | None = None,
        before_attempt: Callable[[], Awaitable[None]] | None = None,
        max_audio_bytes: int = MAX_AUDIO_BYTES,
    ) -> None:
        self._api_key = normalize_secret(api_key)
        self.base_url = (base_url or "https://api.elevenlabs.io").strip().rstrip("/")
        self.model_id = model_id or "scribe_v1"
        self.download_timeout = float(download_timeout)
        self.provider_timeout = float(provider_timeout)
        self.max_attempts = max(1, int(max_attempts))
        self.backoff_base = float(backoff_base)
        self.backoff_max = max(float(backoff_max), self.backoff_base)
        self.deadline_seconds = deadline_seconds
        self._sleep = sleep
        #: awaited before every attempt (download + upload): the system-wide start-rate bucket
        self._before_attempt = before_attempt
        self.max_audio_bytes = max(1, int(max_audio_bytes))
        self._client: httpx.AsyncClient | None = None

    def __repr__(self) -> str:  # never show the key
        return f"ElevenLabsClient(base_url={self.base_url!r}, model_id={self.model_id!r})"

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(follow_redirects=True)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def __aenter__(self) -> "ElevenLabsClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def _secrets(self) -> tuple[str, ...]:
        return (self._api_key,) if self._api_key else ()

    # -- steps -----------------------------------------------------------------------------------

    async def _download(self, recording_url: str, dest: Any) -> int:
        """Stream the audio into ``dest`` (an open binary file); returns the byte count."""
        timeout = httpx.Timeout(self.download_timeout, connect=min(DOWNLOAD_CONNECT_TIMEOUT, self.download_timeout))
        try:
            async with self._http().stream("GET", recording_url, timeout=timeout) as response:
                if not (200 <= response.status_code < 300):
                    await response.aread()
                    body = _response_body(response)
                    # Storage error pages can echo request details: only structured fields are used.
                    raise http_error(
                        DOWNLOAD_PREFIX, response, secrets=self._secrets, body=body if isinstance(body, dict) else {}
                    )
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > self.max_audio_bytes:
                    raise SttError(f"{DOWNLOAD_PREFIX}: audio is {int(declared)} bytes, over the "
                                   f"{self.max_audio_bytes}-byte limit", retryable=False)
                dest.seek(0)
                dest.truncate()
                size = 0
                async for chunk in response.aiter_bytes(_CHUNK):
                    size += len(chunk)
                    if size > self.max_audio_bytes:  # no or lying Content-Length
                        raise SttError(f"{DOWNLOAD_PREFIX}: audio over the {self.max_audio_bytes}-byte limit",
                                       retryable=False)
                    dest.write(chunk)
                dest.flush()
                return size
        except SttError:
            raise
        except httpx.TransportError as exc:
            raise transport_error(DOWNLOAD_PREFIX, exc) from None
        except Exception as exc:  # noqa: BLE001 - never propagate raw client exceptions
            raise SttError(
                f"{DOWNLOAD_PREFIX}: {sanitize_text(str(exc) or type(exc).__name__, secrets=self._secrets)}",
                retryable=False,
            ) from None

    async def _upload(self, audio: Any) -> Transcription:
        audio.seek(0)
        try:
            response = await self._http().post(
                f"{self.base_url}/v1/speech-to-text",
                headers={"xi-api-key": self._api_key, "Accept": "application/json"},
                data={
                    "model_id": self.model_id,
                    "language_code": LANGUAGE_CODE,
                    "timestamps_granularity": "word",
                    "diarize": "true",
                },
                files={"file": ("audio.mp3", audio, "audio/mpeg")},
                follow_redirects=False,  # a redirect must never carry xi-api-key to another host
                timeout=httpx.Timeout(self.provider_timeout, connect=min(30.0, self.provider_timeout)),
            )
        except httpx.TransportError as exc:
            raise transport_error(STT_PREFIX, exc) from None
        except Exception as exc:  # noqa: BLE001
            raise SttError(
                f"{STT_PREFIX}: {sanitize_text(str(exc) or type(exc).__name__, secrets=self._secrets)}",
                retryable=False,
            ) from None
        if not (200 <= response.status_code < 300):
            raise http_error(STT_PREFIX, response, secrets=self._secrets)
        try:
            body = response.json()
        except ValueError:
            raise SttError(f"{STT_PREFIX} status={response.status_code}: response is not JSON", retryable=False) from None
        return extract_transcription(body)

    async def _attempt(self, recording_url: str) -> Transcription:
        fd, path = tempfile.mkstemp(prefix="auditflow-audio-", suffix=".mp3")
        try:
            with os.fdopen(fd, "w+b") as audio:
                size = await self._download(recording_url, audio)
                if size == 0:
                    raise SttError(EMPTY_AUDIO_MESSAGE, retryable=False)
                return await self._upload(audio)
        finally:
            try:
                os.unlink(path)
            except OSError:
                pass

    # -- public ----------------------------------------------------------------------------------

    async def transcribe(self, recording_url: str) -> Transcription:
        if not self._api_key:
            raise SttError(MISSING_KEY_MESSAGE, retryable=False)
        if not isinstance(recording_url, str) or not recording_url.strip():
            raise SttError(f"{DOWNLOAD_PREFIX}: recording URL is empty", retryable=False)
        url = recording_url.strip()
        started = time.monotonic()
        for attempt in range(1, self.max_attempts + 1):
            try:
                if self._before_attempt is not None:
                    await self._before_attempt()
                return await self._attempt(url)
            except SttError as err:
                if not err.retryable or attempt >= self.max_attempts:
                    raise
                delay = backoff_delay(
                    attempt, base=self.backoff_base, maximum=self.backoff_max, retry_after=err.retry_after
                )
                if self.deadline_seconds is not None and time.monotonic() - started + delay > self.deadline_seconds:
                    logger.warning("transcription retry abandoned at the deadline after attempt %d: %s", attempt, err)
                    raise
                logger.info(
                    "transcription attempt %d/%d failed (%s); retrying in %ds", attempt, self.max_attempts, err, delay
                )
                await self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover


# ---------------------------------------------------------------------------------------------
# Sample twin
# ---------------------------------------------------------------------------------------------


class SampleSttClient:
    """Deterministic, instant transcriptions from :mod:`auditflow_dagster.sample.generator`."""

    def __init__(self, *, latency_seconds: float = 0.0) -> None:
        self.latency_seconds = max(0.0, float(latency_seconds))

    async def transcribe(self, recording_url: str) -> Transcription:
        if not isinstance(recording_url, str) or not recording_url.strip():
            raise SttError(f"{DOWNLOAD_PREFIX}: recording URL is empty", retryable=False)
        if self.latency_seconds:
            await asyncio.sleep(self.latency_seconds)
        from auditflow_dagster.sample.generator import transcript_for_recording_url

        try:
            body = transcript_for_recording_url(recording_url.strip())
        except (KeyError, ValueError):
            # Unknown to the generator: behave like an expired/missing recording (non-retryable).
            raise SttError(f"{DOWNLOAD_PREFIX} status=404", status=404, retryable=False) from None
        return extract_transcription(body)

    async def aclose(self) -> None:
        return None

    async def __aenter__(self) -> "SampleSttClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


# ---------------------------------------------------------------------------------------------
# Dagster resource
# ---------------------------------------------------------------------------------------------

STT_MODES = ("elevenlabs", "sample")


class SttResource(ConfigurableResource):
    """Which speech-to-text the pipeline uses. ``api_key`` is a secret: never logged."""

    mode: str = "sample"
    api_key: str = Field(default="", repr=False, description="xi-api-key (secret; prefer EnvVar)")
    base_url: str = "https://api.elevenlabs.io"
    model_id: str = "scribe_v1"
    max_attempts: int = 6
    backoff_base_seconds: float = 2.0
    backoff_max_seconds: float = 60.0
    download_timeout_seconds: float = 120.0
    provider_timeout_seconds: float = 600.0
    max_audio_bytes: int = MAX_AUDIO_BYTES
    deadline_seconds: float | None = None
    sample_latency_seconds: float = 0.0

    @classmethod
    def from_settings(cls, settings: Any | None = None) -> "SttResource":
        if settings is None:
            from auditflow_dagster.settings import get_settings

            settings = get_settings()
        base = max(1.0, float(settings.transcription_backoff_base_seconds))
        return cls(
            mode=settings.stt_mode,
            api_key=secret_field_value(settings.elevenlabs_api_key, "ELEVENLABS_API_KEY"),
            base_url=settings.elevenlabs_base_url,
            model_id=settings.elevenlabs_stt_model_id,
            max_attempts=max(1, int(settings.transcription_max_attempts)),
            backoff_base_seconds=base,
            backoff_max_seconds=max(base, float(settings.transcription_backoff_max_seconds)),
            download_timeout_seconds=float(settings.transcription_download_timeout_seconds),
            provider_timeout_seconds=float(settings.transcription_provider_timeout_seconds),
            max_audio_bytes=int(settings.transcription_max_audio_bytes),
        )

    def _check(self) -> None:
        if self.mode not in STT_MODES:
            raise ValueError(f"STT mode must be one of {STT_MODES}, got {self.mode!r} (AUDITFLOW_STT)")

    def setup_for_execution(self, context: Any) -> None:
        self._check()

    def client(self, *, before_attempt: Callable[[], Awaitable[None]] | None = None) -> ElevenLabsClient | SampleSttClient:
        """``before_attempt`` (e.g. the provider rate bucket) is awaited before every real provider
        attempt; the offline twin bills nothing and ignores it."""
        self._check()
        if self.mode == "sample":
            return SampleSttClient(latency_seconds=self.sample_latency_seconds)
        return ElevenLabsClient(
            resolve_secret(self.api_key),
            base_url=self.base_url,
            model_id=self.model_id,
            download_timeout=self.download_timeout_seconds,
            provider_timeout=self.provider_timeout_seconds,
            max_attempts=self.max_attempts,
            backoff_base=self.backoff_base_seconds,
            backoff_max=self.backoff_max_seconds,
            deadline_seconds=self.deadline_seconds,
            before_attempt=before_attempt,
            max_audio_bytes=self.max_audio_bytes,
        )
