"""Chat core (spec 04 §6): marker splitting under any chunking, citation validation, contexts,
the offline responder, and the streamed client against a fake Responses API over real HTTP."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from auditflow_dagster.core import chat as core
from auditflow_dagster.resources.chat_llm import (
    OfflineChat,
    OpenAiChat,
    build_chat_request,
)
from auditflow_dagster.resources.llm import LlmError
from tests.fakes.openai_server import FakeOpenAI, StreamReply
from tests.fakes.server import serve_app

KEY = "sk-test-fake-key-abcdef123456"

TIMELINE: list[dict[str, Any]] = [
    {
        "recording_index": 0, "call_id": "c1", "recording_url": "https://rec.example/20250102-101500-0601-0602.mp3",
        "recording_date": "", "recording_time": "", "from_number": "", "to_number": "", "duration_seconds": 60,
        "total_chunks": 2,
        "chunks": [
            {"chunk_index": 0, "start_timestamp": 12.4, "end_timestamp": 20, "speakers": ["speaker_0", "speaker_1"],
             "full_text": "speaker_0: Bonjour, je vous informe que l'appel est enregistré.\nspeaker_1: D'accord."},
            {"chunk_index": 1, "start_timestamp": 75.4, "end_timestamp": 90, "speakers": ["speaker_0"],
             "full_text": "speaker_0: Votre mutuelle santé coûtera 42 euros par mois avec la garantie dentaire."},
        ],
    },
    {
        "recording_index": 1, "call_id": "c2", "recording_url": "https://rec.example/b.mp3",
        "recording_date": "03/01/2025", "recording_time": "09:00", "duration_seconds": 30, "total_chunks": 1,
        "chunks": [{"chunk_index": 0, "start_timestamp": 0, "end_timestamp": 30, "speakers": ["speaker_1"],
                    "full_text": "speaker_1: Je confirme mon adhésion."}],
    },
]


def marker(**fields: Any) -> str:
    base = {"texte": "l'appel est enregistré", "minutage": "00:12", "minutage_secondes": 12.4, "speaker": "speaker_0",
            "recording_index": 0, "chunk_index": 0, "recording_date": "x", "recording_time": "y", "recording_url": "z"}
    base.update(fields)
    return "[CITATION:" + json.dumps(base, ensure_ascii=False) + "]"


# --------------------------------------------------------------------------------------------- #
# Markers
# --------------------------------------------------------------------------------------------- #


def test_split_markers_basic():
    m = marker()
    visible, markers = core.split_markers(f"Oui {m} c'est dit.")
    assert visible == "Oui  c'est dit." and len(markers) == 1
    assert json.loads(markers[0])["texte"] == "l'appel est enregistré"
    # an unterminated marker is plain text, as is a lone "[CITATION" prefix
    assert core.split_markers("a [CITATION:{\"x\": 1") == ("a [CITATION:{\"x\": 1", [])
    assert core.split_markers("fin [CITAT") == ("fin [CITAT", [])


def _chunkings(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts})
    out, prev = [], 0
    for p in points:
        out.append(text[prev:p])
        prev = p
    out.append(text[prev:])
    return out


def _run(chunks: list[str]) -> tuple[str, list[str], list[str]]:
    splitter = core.MarkerSplitter()
    emitted = [splitter.feed(c) for c in chunks] + [splitter.close()]
    return "".join(emitted), splitter.markers, emitted


_pieces = st.lists(
    st.one_of(
        st.text(alphabet="ab [{}]:CITON\"é", max_size=8),
        st.sampled_from([marker(), marker(texte="D'accord"), "[CITATION:", "}]", "[CIT", "[CITATION:{\"a\": 1}]"]),
    ),
    max_size=8,
)


@given(_pieces, st.lists(st.integers(min_value=0, max_value=10_000), max_size=12))
def test_any_chunking_gives_the_same_text_and_markers(pieces, cuts):
    text = "".join(pieces)
    visible, markers = core.split_markers(text)
    got_visible, got_markers, emitted = _run(_chunkings(text, cuts))
    assert (got_visible, got_markers) == (visible, markers)
    # nothing emitted along the way ever holds a complete marker or its body
    for m in markers:
        assert all(core.MARKER_OPEN + m + "]" not in e for e in emitted)


@given(st.lists(st.integers(min_value=0, max_value=400), max_size=20))
def test_a_split_marker_never_leaks(cuts):
    text = f"Début {marker()} milieu {marker(texte='D’accord')} fin."
    visible, markers, emitted = _run(_chunkings(text, cuts))
    assert visible == "Début  milieu  fin." and len(markers) == 2
    assert "CITATION" not in visible and "[CI" not in "".join(emitted)


def test_unclosed_marker_is_released_after_the_cap():
    splitter = core.MarkerSplitter()
    out = splitter.feed("x [CITATION:{" + "a" * core.MARKER_MAX_CHARS)
    assert out.startswith("x [") and splitter.markers == []


# --------------------------------------------------------------------------------------------- #
# Citations
# --------------------------------------------------------------------------------------------- #


def _bodies(*markers: str) -> list[str]:
    return core.split_markers("".join(markers))[1]


def test_valid_citations_keep_only_real_quotes_and_take_recording_fields_from_the_timeline():
    timeline = core.fill_from_filenames(TIMELINE)
    kept = core.valid_citations(_bodies(
        marker(),  # valid (case/accents/punctuation-insensitive)
        marker(texte="L'APPEL EST ENREGISTRE !"),  # valid too
        marker(texte="une phrase jamais dite"),  # not in the chunk
        marker(chunk_index=5),  # chunk out of range
        marker(recording_index=7),  # unknown recording
        marker(chunk_index="0"),  # not an integer
        marker(texte=""),  # empty quote
        marker(texte="Je confirme mon adhésion", recording_index=1, chunk_index=0),
        "[CITATION:{not json}]",
    ), timeline)
    assert [c["texte"] for c in kept] == ["l'appel est enregistré", "L'APPEL EST ENREGISTRE !", "Je confirme mon adhésion"]
    assert kept[0]["recording_date"] == "02/01/2025" and kept[0]["recording_time"] == "10:15"  # from the file name
    assert kept[0]["recording_url"] == TIMELINE[0]["recording_url"]
    assert kept[2]["recording_date"] == "03/01/2025" and kept[2]["recording_time"] == "09:00"
    assert list(kept[0]) == list(core.CITATION_KEYS)
    no_dates = [{**TIMELINE[1], "recording_index": 0, "recording_date": "", "recording_time": ""}]
    [c] = core.valid_citations(_bodies(marker(texte="confirme mon adhésion")), no_dates)
    assert (c["recording_date"], c["recording_time"]) == ("N/A", "N/A")


def test_fill_from_filenames_keeps_known_values():
    filled = core.fill_from_filenames(TIMELINE)
    assert filled[0]["from_number"] == "0601" and filled[0]["to_number"] == "0602"
    assert filled[1]["recording_date"] == "03/01/2025"
    assert TIMELINE[0]["recording_date"] == ""  # input untouched


# --------------------------------------------------------------------------------------------- #
# Contexts
# --------------------------------------------------------------------------------------------- #

FICHE = {"fiche_id": "1234", "prospect_nom": "Durand", "prospect_prenom": "Alice", "prospect_email": "a@x.fr",
         "prospect_tel": None, "groupe": "Team A"}


def test_audit_context_lists_the_audit_the_steps_and_the_timeline():
    ctx = core.audit_context(
        fiche=FICHE, recordings={"total": 3, "transcribed": 2},
        audit={"config_name": "Checklist", "score_percentage": "87.5", "niveau": "BON", "is_compliant": True,
               "critical_passed": 2, "critical_total": 2, "successful_steps": 4, "failed_steps": 1, "total_tokens": 999},
        steps=[{"position": 1, "name": "Annonce", "conforme": "CONFORME", "score": 5, "weight": 5}],
        timeline=core.fill_from_filenames(TIMELINE),
    )
    for expected in ("Alice Durand", "Team A", "3 (dont 2 transcrits)", "Checklist", "87.5%", "BON", "2/2",
                     "4 / 1", "999", "Étape 1 « Annonce » : CONFORME, score 5/5", "Enregistrement #2",
                     "Chunk 1", "[CITATION:", "N'invente rien", "02/01/2025"):
        assert expected in ctx, expected


def test_fiche_context_lists_audits_newest_first_and_recording_minutes():
    ctx = core.fiche_context(
        fiche=FICHE, recordings={"total": 2, "transcribed": 2, "seconds": 90},
        audits=[{"config_name": "New", "score_percentage": "90", "niveau": "EXCELLENT", "date": "2025-02-01",
                 "is_compliant": True, "critical_passed": 1, "critical_total": 1},
                {"config_name": "Old", "score_percentage": "50", "niveau": "REJET", "date": "2025-01-01",
                 "is_compliant": False, "critical_passed": 0, "critical_total": 1}],
        timeline=TIMELINE,
    )
    assert "a@x.fr" in ctx and "Téléphone : N/A" in ctx and "1.5 minutes" in ctx
    assert ctx.index("New") < ctx.index("Old")
    assert "recording_index = X − 1" in ctx


def test_input_items_is_the_window_then_the_message():
    window = [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"}, {"role": "system", "content": "s"}]
    assert core.input_items(window, "q2") == [
        {"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"}, {"role": "user", "content": "q2"}]


# --------------------------------------------------------------------------------------------- #
# Offline responder
# --------------------------------------------------------------------------------------------- #


def test_offline_reply_quotes_the_best_chunk_with_a_valid_citation():
    reply = core.offline_reply("Combien coûte la mutuelle dentaire ?", TIMELINE, "Audit X")
    visible, markers = core.split_markers(reply)
    assert visible.startswith("Audit X") and "mutuelle" in visible
    [c] = core.valid_citations(markers, TIMELINE)
    assert (c["recording_index"], c["chunk_index"], c["minutage"]) == (0, 1, "01:15")
    none = core.offline_reply("xyz?", TIMELINE)
    assert core.split_markers(none)[1] == [] and "n'apparaît pas" in none


def _collect(agen: Any) -> list[str]:
    async def run() -> list[str]:
        return [d async for d in agen]

    return asyncio.run(run())


def test_offline_chat_streams_small_chunks_of_the_reply():
    items = [{"role": "user", "content": "adhésion confirmée ?"}]
    deltas = _collect(OfflineChat().stream(instructions="ctx", input_items=items, timeline=TIMELINE))
    assert len(deltas) > 5 and all(len(d) <= 7 for d in deltas)
    assert "".join(deltas) == core.offline_reply("adhésion confirmée ?", TIMELINE)


# --------------------------------------------------------------------------------------------- #
# Streamed client (real SDK, fake server over HTTP)
# --------------------------------------------------------------------------------------------- #


def test_build_chat_request_reasoning_and_temperature_rules():
    items = [{"role": "user", "content": "q"}]
    r = build_chat_request(model="gpt-5.2", instructions="ctx", input_items=items, max_output_tokens=3000)
    assert r["reasoning"] == {"effort": "medium"} and r["text"] == {"verbosity": "low"}
    assert "temperature" not in r and r["stream"] is True and r["max_output_tokens"] == 3000
    r = build_chat_request(model="gpt-4.1", instructions="ctx", input_items=items, max_output_tokens=10, temperature=0.2)
    assert r["temperature"] == 0.2 and "reasoning" not in r and "text" not in r
    r = build_chat_request(model="o4-mini", instructions="ctx", input_items=items, max_output_tokens=10)
    assert r["reasoning"] == {"effort": "medium"} and "text" not in r and "temperature" not in r


@pytest.fixture
def openai_fake() -> Iterator[tuple[FakeOpenAI, str]]:
    fake = FakeOpenAI(api_key=KEY)
    with serve_app(fake.app) as url:
        yield fake, url + "/v1"


def _chat(url: str, key: str = KEY) -> OpenAiChat:
    return OpenAiChat(key, model="gpt-5.2", max_output_tokens=1234, base_url=url, max_retries=0)


def _stream(chat: OpenAiChat) -> list[str]:
    async def run() -> list[str]:
        try:
            return [d async for d in chat.stream(instructions="CTX", input_items=[{"role": "user", "content": "q"}],
                                                 timeline=TIMELINE)]
        finally:
            await chat.aclose()

    return asyncio.run(run())


def test_openai_chat_streams_deltas_and_sends_the_request(openai_fake):
    fake, url = openai_fake
    fake.stream_deltas = ["Bon", "", "jour", " !"]
    assert _stream(_chat(url)) == ["Bon", "jour", " !"]
    [req] = fake.requests
    body = req["json"]
    assert body["stream"] is True and body["instructions"] == "CTX" and body["max_output_tokens"] == 1234
    assert body["input"] == [{"role": "user", "content": "q"}] and body["model"] == "gpt-5.2"


@pytest.mark.parametrize("fail", ["error", "drop"])
def test_openai_chat_mid_stream_failure_is_an_llm_error(openai_fake, fail):
    fake, url = openai_fake
    fake.handler = lambda payload: StreamReply(["a", "b"], fail=fail)
    seen: list[str] = []

    async def run() -> None:
        chat = _chat(url)
        try:
            async for d in chat.stream(instructions="CTX", input_items=[{"role": "user", "content": "q"}],
                                       timeline=TIMELINE):
                seen.append(d)
        finally:
            await chat.aclose()

    with pytest.raises(LlmError) as err:
        asyncio.run(run())
    assert seen == ["a", "b"]
    assert KEY not in str(err.value)


def test_openai_chat_bad_key_is_a_sanitised_error(openai_fake):
    fake, url = openai_fake
    with pytest.raises(LlmError) as err:
        _stream(_chat(url, key="sk-wrong-key-000000000000"))
    assert "status=401" in str(err.value) and "sk-wrong" not in str(err.value)
