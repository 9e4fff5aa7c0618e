"""Chunking, synthetic words, timeline build and text layout (spec 02 §3.3, §3.4, §4; spec 03 §2.3)."""

from __future__ import annotations

import datetime as dt
import math
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from auditflow_dagster.core.audit_config import AuditStepSpec
from auditflow_dagster.core.timeline import (
    TIMELINE_CHUNK_SIZE,
    build_timeline,
    chunk_words,
    excerpt_text,
    js_number,
    minutage,
    synthetic_words,
    timeline_text,
)

B = "═" * 79
E = "=" * 80


def w(text, start, end, speaker=None, type_="word"):
    d = {"text": text, "start": start, "end": end, "type": type_}
    if speaker is not None:
        d["speaker_id"] = speaker
    return d


# --------------------------------------------------------------------------- chunking (§3.3)


def test_chunk_words_spec_example():
    words = [
        w("Bonjour", 0.12, 0.5, "speaker_0"),
        w(" ", 0.5, 0.52, "speaker_0", "spacing"),
        w("madame.", 0.52, 1, "speaker_0"),
        w("Oui", 1.4, 1.7, "speaker_1"),
        w("(rires)", 2, 3, "speaker_1", "audio_event"),
    ]
    assert chunk_words(words) == [
        {"chunk_index": 0, "start_timestamp": 0.12, "end_timestamp": 3, "message_count": 2,
         "speakers": ["speaker_0", "speaker_1"], "full_text": "speaker_0: Bonjour madame.\nspeaker_1: Oui (rires)"}
    ]


def test_first_token_without_speaker_keeps_its_start():
    # PROPOSED fix: legacy left the first message at 0 when the first token had no speaker.
    chunks = chunk_words([w("Allô", 1.25, 1.5), w("oui", 1.6, 2.0), w("Bonjour", 2.5, 3, "speaker_0")])
    assert chunks[0]["start_timestamp"] == 1.25
    assert chunks[0]["full_text"] == "unknown: Allô oui\nspeaker_0: Bonjour"
    assert chunks[0]["speakers"] == ["unknown", "speaker_0"]


def test_ten_messages_per_chunk_and_spacing_does_not_split_messages():
    words = []
    for i in range(23):
        sp = f"speaker_{i % 2}"
        words += [w(f"m{i}a", i, i + 0.4, sp), w(" ", i + 0.4, i + 0.5, "speaker_9", "spacing"), w(f"m{i}b", i + 0.5, i + 0.9, sp)]
    chunks = chunk_words(words)
    assert TIMELINE_CHUNK_SIZE == 10
    assert [c["chunk_index"] for c in chunks] == [0, 1, 2]
    assert [c["message_count"] for c in chunks] == [10, 10, 3]
    assert (chunks[1]["start_timestamp"], chunks[1]["end_timestamp"]) == (10, 19.9)
    assert chunks[2]["full_text"].splitlines() == ["speaker_0: m20a m20b", "speaker_1: m21a m21b", "speaker_0: m22a m22b"]


def test_chunk_words_empty():
    assert chunk_words([]) == []
    assert chunk_words([w(" ", 0, 1, "speaker_0", "spacing")]) == []


_token = st.builds(
    w,
    st.text(alphabet="abcdé", min_size=1, max_size=5),
    st.floats(0, 1000),
    st.floats(0, 1000),
    st.sampled_from(["speaker_0", "speaker_1", None]),
    st.sampled_from(["word", "word", "spacing", "audio_event"]),
)


@given(st.lists(_token, max_size=80))
def test_chunking_properties(words):
    kept = [t for t in words if t["type"] != "spacing"]
    runs = [t.get("speaker_id") or "unknown" for t in kept]
    n_messages = sum(1 for i, s in enumerate(runs) if i == 0 or runs[i - 1] != s)
    chunks = chunk_words(words)
    assert [c["chunk_index"] for c in chunks] == list(range(len(chunks)))
    assert len(chunks) == math.ceil(n_messages / TIMELINE_CHUNK_SIZE)
    assert sum(c["message_count"] for c in chunks) == n_messages
    assert all(1 <= c["message_count"] <= TIMELINE_CHUNK_SIZE for c in chunks)
    # No token lost or reordered: texts of all lines, without labels, are the kept tokens in order.
    text_tokens = [tok for c in chunks for line in c["full_text"].split("\n") for tok in line.split(": ", 1)[1].split(" ")]
    assert text_tokens == [t["text"] for t in kept]
    if chunks:
        assert chunks[0]["start_timestamp"] == kept[0]["start"]
        assert chunks[-1]["end_timestamp"] == kept[-1]["end"]
    for c in chunks:
        assert len(c["speakers"]) == len(set(c["speakers"]))


# --------------------------------------------------------------------------- synthetic words (§3.4)


def test_synthetic_words_with_duration():
    words = synthetic_words("un deux trois quatre", 8)
    assert [(x["text"], x["start"], x["end"]) for x in words] == [
        ("un", 0, 2), ("deux", 2, 4), ("trois", 4, 6), ("quatre", 6, 8)]
    assert {x["type"] for x in words} == {"word"}


def test_synthetic_words_without_duration_rounds_half_up():
    # n=5 → dur = Math.round(2.5) = 3 (Python's round would give 2) → w = 0.6
    words = synthetic_words("a b c d e", None)
    assert words[-1]["end"] == pytest.approx(3.0)
    assert words[1]["start"] == pytest.approx(0.6)
    assert synthetic_words("a", 0)[0]["end"] == 1  # max(1, round(0.5)) = 1


def test_synthetic_words_min_width_and_speaker_alternation():
    words = synthetic_words(" ".join(f"w{i}" for i in range(45)), 1)
    assert words[1]["start"] == pytest.approx(0.05)  # 1/45 < 0.05
    speakers = [x["speaker_id"] for x in words]
    assert speakers[:10] == ["speaker_0"] * 10
    assert speakers[10:20] == ["speaker_1"] * 10
    assert speakers[20] == "speaker_0" and speakers[44] == "speaker_0"
    assert synthetic_words("   ", 10) == []


# --------------------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    ("x", "s"),
    [(3, "3"), (3.0, "3"), (0.12, "0.12"), (12.4, "12.4"), (-0.0, "0"), (100.0, "100"), (1e21, "1e+21"),
     (1e-7, "1e-7"), (0.000001, "0.000001"), (123456789.125, "123456789.125"), (0.1 + 0.2, "0.30000000000000004"),
     (-2.5, "-2.5"), (1e20, "100000000000000000000")],
)
def test_js_number(x, s):
    assert js_number(x) == s


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_js_number_round_trips(x):
    s = js_number(x)
    assert float(s) == x
    assert not s.endswith(".0")


@pytest.mark.parametrize(("sec", "mm"), [(0, "00:00"), (12.4, "00:12"), (59.999, "00:59"), (75.4, "01:15"),
                                         (6005.9, "100:05"), (-3, "00:00")])
def test_minutage(sec, mm):
    assert minutage(sec) == mm


@given(st.floats(0, 10**6))
def test_minutage_is_floor(sec):
    m = re.fullmatch(r"(\d{2,})\:(\d{2})", minutage(sec))
    assert m
    assert int(m[1]) * 60 + int(m[2]) == math.floor(sec)
    assert int(m[2]) < 60


# --------------------------------------------------------------------------- build (§4)


def rec(call_id, *, url="https://cdn/x.mp3", has=True, chunks=None, data=None, text=None, start=None, duration=30,
        date="15/01/2025", time="09:30", frm="+33 6 00 00 00 02", to="0102"):
    return {"call_id": call_id, "start_time": start, "duration_seconds": duration, "recording_url": url,
            "recording_date": date, "recording_time": time, "from_number": frm, "to_number": to,
            "has_transcription": has, "chunks": chunks or [], "transcription_data": data, "transcription_text": text}


STORED = [
    {"chunk_index": 1, "start_timestamp": 30.5, "end_timestamp": 61, "message_count": 1, "speakers": ["speaker_1"],
     "full_text": "speaker_1: Au revoir."},
    {"chunk_index": 0, "start_timestamp": 0.12, "end_timestamp": 30, "message_count": 2,
     "speakers": ["speaker_0", "speaker_1"], "full_text": "speaker_0: Bonjour madame.\nspeaker_1: Oui"},
]


def test_build_timeline_keeps_transcribed_recordings_with_url_and_reindexes():
    recordings = [
        rec("111", chunks=STORED, start=dt.datetime(2025, 1, 15, 9, 30, 12, 123456)),
        rec("222", url="", chunks=STORED),  # no URL: dropped
        rec("333", has=False, chunks=STORED),  # not transcribed: dropped
        rec("444", data={"words": [{"text": "Allô", "start": 0, "end": 1, "speaker_id": "speaker_0"}]}, duration=None,
            date=None, time=None, frm=None, to=None),
        rec("555", text="bonjour je vous appelle"),
        rec("666"),  # transcribed but silent: dropped
    ]
    tl = build_timeline(recordings)
    assert [(r["recording_index"], r["call_id"]) for r in tl] == [(0, "111"), (1, "444"), (2, "555")]
    first = tl[0]
    assert first["start_time"] == "2025-01-15T09:30:12.123Z"
    assert [c["chunk_index"] for c in first["chunks"]] == [0, 1]
    assert first["total_chunks"] == 2
    legacy = tl[1]
    assert legacy["chunks"][0]["full_text"] == "speaker_0: Allô"  # missing type defaults to word
    assert (legacy["start_time"], legacy["duration_seconds"], legacy["recording_date"], legacy["recording_time"],
            legacy["from_number"], legacy["to_number"]) == ("", 0, "", "", "", "")
    synthetic = tl[2]
    assert synthetic["chunks"][0]["full_text"] == "speaker_0: bonjour je vous appelle"
    assert synthetic["chunks"][0]["end_timestamp"] == pytest.approx(30)
    assert set(first) == {"recording_index", "call_id", "start_time", "duration_seconds", "recording_url",
                          "recording_date", "recording_time", "from_number", "to_number", "total_chunks", "chunks"}


def test_build_timeline_converts_aware_start_time_to_utc():
    tz = dt.timezone(dt.timedelta(hours=2))
    tl = build_timeline([rec("1", chunks=STORED, start=dt.datetime(2025, 1, 15, 11, 0, tzinfo=tz))])
    assert tl[0]["start_time"] == "2025-01-15T09:00:00.000Z"


# --------------------------------------------------------------------------- text layout (§4)


def test_timeline_text_exact_layout():
    tl = build_timeline([
        rec("7000000000000000001", chunks=STORED, duration=61),
        rec("7000000000000000002", chunks=[STORED[1]], date=None, time=None, frm=None, to=None, duration=None),
    ])
    expected = (
        f"{B}\nCHRONOLOGIE COMPLÈTE DE LA CONVERSATION\n{B}\n\n"
        f"\n{E}\nEnregistrement #1\nDate: 15/01/2025\nHeure: 09:30\nCall ID: 7000000000000000001\n"
        f"De: +33 6 00 00 00 02 → Vers: 0102\nDurée: 61s\nTotal Chunks: 2\n{E}\n\n"
        "\n─── Chunk 1 ───\nTemps: 0.12s - 30s\nSpeakers: speaker_0, speaker_1\n\nConversation:\n"
        "speaker_0: Bonjour madame.\nspeaker_1: Oui\n"
        "\n─── Chunk 2 ───\nTemps: 30.5s - 61s\nSpeakers: speaker_1\n\nConversation:\nspeaker_1: Au revoir.\n"
        f"\n{E}\nEnregistrement #2\nDate: N/A\nHeure: N/A\nCall ID: 7000000000000000002\n"
        f"De: N/A → Vers: N/A\nDurée: 0s\nTotal Chunks: 1\n{E}\n\n"
        "\n─── Chunk 1 ───\nTemps: 0.12s - 30s\nSpeakers: speaker_0, speaker_1\n\nConversation:\n"
        "speaker_0: Bonjour madame.\nspeaker_1: Oui\n"
        f"\n{E}\nFIN DE LA CHRONOLOGIE\n{E}\n\n"
    )
    assert timeline_text(tl) == expected


def test_timeline_text_empty_timeline():
    assert timeline_text([]) == f"{B}\nCHRONOLOGIE COMPLÈTE DE LA CONVERSATION\n{B}\n\n\n{E}\nFIN DE LA CHRONOLOGIE\n{E}\n\n"


# --------------------------------------------------------------------------- excerpt (spec 03 §2.3)


def _step(**kw):
    base = {"position": 3, "name": "Garanties", "prompt": "Vérifier.", "controlPoints": ["Hospitalisation expliquée"],
            "keywords": ["dentaire", "optique", "ab"], "severityLevel": "HIGH", "verifyProductInfo": True}
    base.update(kw)
    return AuditStepSpec.model_validate(base)


def _long_recording(call_id, texts):
    chunks = [{"chunk_index": i, "start_timestamp": i * 10, "end_timestamp": i * 10 + 9, "message_count": 1,
               "speakers": ["speaker_0"], "full_text": f"speaker_0: {t}"} for i, t in enumerate(texts)]
    return rec(call_id, chunks=chunks)


def _chunk_labels(text):
    """[(recording number, chunk number)] in print order."""
    out, current = [], None
    for line in text.split("\n"):
        if m := re.fullmatch(r"Enregistrement #(\d+)", line):
            current = int(m[1])
        elif m := re.fullmatch(r"─── Chunk (\d+) ───", line):
            out.append((current, int(m[1])))
    return out


def test_excerpt_selects_matching_chunks_with_neighbours():
    texts = ["bla"] * 30
    texts[5] = "Le remboursement DENTAIRE est de 200 %"
    texts[20] = "optique et hospitalisation expliquée"  # matches 2 terms
    texts[29] = "fin dentaire"
    tl = build_timeline([_long_recording("A", texts), _long_recording("B", ["rien"] * 3)])
    text = excerpt_text(tl, _step())
    assert text.startswith(f"{B}\nEXTRAIT PERTINENT DE LA CHRONOLOGIE (pour cette étape)\n{B}\n")
    assert text.endswith(f"\n{E}\nFIN DE L'EXTRAIT\n{E}\n\n")
    assert "ABSENT" in text and "EXTRAIT" in text.split("\n")[3]
    assert _chunk_labels(text) == [(1, 5), (1, 6), (1, 7), (1, 20), (1, 21), (1, 22), (1, 29), (1, 30)]
    assert "Enregistrement #2" not in text  # no selected chunk there


def test_excerpt_terms_are_whole_normalised_phrases_of_four_chars():
    # "ab" (too short) must not match; the control point matches only as a whole phrase.
    tl = build_timeline([_long_recording("A", ["ab ab", "hospitalisation", "Hospitalisation   EXPLIQUÉE !"])])
    assert _chunk_labels(excerpt_text(tl, _step(keywords=["ab"], name="Zzzz"))) == [(1, 2), (1, 3)]


def test_excerpt_falls_back_to_first_two_chunks_per_recording():
    tl = build_timeline([_long_recording("A", ["x", "y", "z"]), _long_recording("B", ["only"])])
    assert _chunk_labels(excerpt_text(tl, _step())) == [(1, 1), (1, 2), (2, 1)]


def test_excerpt_caps_top_chunks_with_minimum_of_ten():
    texts = ["dentaire optique" if i % 3 == 0 else "dentaire" if i % 3 == 1 else "rien" for i in range(60)]
    tl = build_timeline([_long_recording("A", texts)])
    # max_chunks below the floor of 10 is raised to 10: the 10 two-term chunks (0,3,…,27) win,
    # ties broken by timeline order, each with ±1 neighbour.
    labels = _chunk_labels(excerpt_text(tl, _step(), max_chunks=2))
    expected = sorted({n + 1 for i in range(0, 30, 3) for n in (i - 1, i, i + 1) if 0 <= n < 60})
    assert labels == [(1, n) for n in expected]
    wide = _chunk_labels(excerpt_text(tl, _step(), max_chunks=40))
    assert len(wide) > len(labels)


# --------------------------------------------------------------------------- stability (issue 4)

_speaker = st.sampled_from(["speaker_0", "speaker_1", None])
_word = st.builds(lambda t, s, spk, kind: {"text": t, "start": s, "end": s + 0.3, "type": kind, "speaker_id": spk},
                  st.text(alphabet="abcdéè ,.", min_size=1, max_size=8), st.floats(0, 3600), _speaker,
                  st.sampled_from(["word", "word", "spacing", "audio_event"]))


@given(st.lists(st.lists(_word, max_size=40), min_size=1, max_size=4), st.data())
def test_timeline_is_deterministic_and_a_new_untranscribed_recording_moves_nothing(word_lists, data):
    """The same stored rows give byte-identical text, and chunk coordinates (call_id, chunk_index,
    text) do not move when an untranscribed or URL-less recording appears among them."""
    recs = [rec(f"90000000000000000{i}", chunks=chunk_words(words), start=dt.datetime(2025, 1, 1, 9, i))
            for i, words in enumerate(word_lists)]
    tl = build_timeline(recs)
    assert timeline_text(tl) == timeline_text(build_timeline([dict(r) for r in recs]))
    newcomer = data.draw(st.sampled_from([rec("1234", has=False, chunks=STORED), rec("5678", url="", chunks=STORED)]))
    spot = data.draw(st.integers(0, len(recs)))
    tl2 = build_timeline(recs[:spot] + [newcomer] + recs[spot:])

    def coords(t):
        return [(r["call_id"], c["chunk_index"], c["full_text"]) for r in t for c in r["chunks"]]

    assert coords(tl2) == coords(tl)
    assert [r["recording_index"] for r in tl2] == list(range(len(tl2)))
