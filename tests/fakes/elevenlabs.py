"""A fake ElevenLabs speech-to-text API plus a fake recording store (spec 02 §2).

``POST /v1/speech-to-text`` checks ``xi-api-key``, parses the multipart body (stdlib parser, no
python-multipart needed) and records every field; ``GET /audio/{name}`` serves recordings (signed
query strings are accepted and recorded); ``GET /redirect/{name}`` redirects to the audio.
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import threading
from collections import deque
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from tests.fakes.server import Reply

FAKE_AUDIO = b"ID3\x03\x00\x00\x00" + bytes(range(256)) * 64  # ~16 KiB of "mp3"


def parse_multipart(content_type: str, body: bytes) -> dict[str, dict[str, Any]]:
    """``{name: {"value": str|None, "filename": str|None, "content_type": str, "data": bytes}}``."""
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    )
    if not msg.is_multipart():
        raise ValueError("not a multipart body")
    fields: dict[str, dict[str, Any]] = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        data = part.get_payload(decode=True) or b""
        filename = part.get_filename()
        fields[str(name)] = {
            "filename": filename,
            "content_type": part.get_content_type() if part.get("content-type") else None,
            "data": data,
            "value": None if filename is not None else data.decode("utf-8"),
        }
    return fields


def provider_body(transcription_id: str | None = "tr_fake_0001") -> dict[str, Any]:
    body: dict[str, Any] = {
        "language_code": "fra",
        "language_probability": 0.98,
        "text": "Bonjour, je vous informe que l'appel est enregistré.",
        "words": [
            {"text": "Bonjour,", "start": 0.1, "end": 0.6, "type": "word", "speaker_id": "speaker_0", "logprob": -0.1, "characters": None},
            {"text": " ", "start": 0.6, "end": 0.7, "type": "spacing", "speaker_id": "speaker_0"},
            {"text": "(rires)", "start": 0.7, "end": 1.0, "type": "audio_event", "speaker_id": "speaker_1"},
            {"text": "bad", "start": "x", "end": 1.2, "type": "word"},
            {"text": 3, "start": 1, "end": 2, "type": "word"},
            {"text": "no-type", "start": 1, "end": 2},
            {"text": "enregistré.", "start": 1.2, "end": 2.0, "type": "word", "speaker_id": "speaker_0"},
        ],
    }
    if transcription_id is not None:
        body["transcription_id"] = transcription_id
    return body


class FakeElevenLabs:
    def __init__(self, api_key: str = "xi-test-key-123456", *, any_audio: bool = False, stt_delay: float = 0.0) -> None:
        self.api_key = api_key
        self.audio: dict[str, bytes] = {"call.mp3": FAKE_AUDIO, "empty.mp3": b""}
        self.any_audio = any_audio  # serve FAKE_AUDIO for every other name too
        self.stt_delay = stt_delay  # seconds each successful transcription takes
        self.uploads: list[dict[str, Any]] = []
        self.downloads: list[dict[str, Any]] = []
        self.stt_script: deque[Reply] = deque()
        self.download_script: deque[Reply] = deque()
        self.response_body: dict[str, Any] = provider_body()
        self._lock = threading.Lock()
        self.app = Starlette(
            routes=[
                Route("/v1/speech-to-text", self._stt, methods=["POST"]),
                Route("/audio/{name}", self._audio),
                Route("/redirect/{name}", self._redirect),
            ]
        )

    async def _audio(self, request: Request) -> Any:
        with self._lock:
            self.downloads.append(
                {
                    "path": request.url.path,
                    "query": request.url.query,
                    "headers": {k.lower(): v for k, v in request.headers.items()},
                }
            )
            scripted = self.download_script.popleft() if self.download_script else None
        if scripted:
            return await scripted.render()
        data = self.audio.get(request.path_params["name"], FAKE_AUDIO if self.any_audio else None)
        if data is None:
            return Response(b"<Error><Code>NoSuchKey</Code></Error>", status_code=404, media_type="application/xml")
        return Response(data, media_type="audio/mpeg")

    async def _redirect(self, request: Request) -> Any:
        return RedirectResponse(f"/audio/{request.path_params['name']}?{request.url.query}", status_code=302)

    async def _stt(self, request: Request) -> Any:
        body = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            fields = parse_multipart(headers.get("content-type", ""), body)
        except Exception:  # noqa: BLE001
            fields = {}
        with self._lock:
            self.uploads.append({"headers": headers, "fields": fields, "query": request.url.query})
            scripted = self.stt_script.popleft() if self.stt_script else None
        if headers.get("xi-api-key") != self.api_key:
            return JSONResponse(
                {"detail": {"status": "invalid_api_key", "message": "Invalid API key"}}, status_code=401
            )
        if scripted:
            return await scripted.render()
        if "file" not in fields or fields.get("model_id", {}).get("value") is None:
            return JSONResponse({"detail": {"status": "invalid_request", "message": "file and model_id required"}}, status_code=422)
        if self.stt_delay:
            await asyncio.sleep(self.stt_delay)
        return JSONResponse(self.response_body)
