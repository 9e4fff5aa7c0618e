"""Transcript tools of the tools mode (spec 03 §5): search, fetch, clamping, schemas, dispatch."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditflow_dagster.core.evidence import norm
from auditflow_dagster.core.transcript_tools import (
    FETCH_TOOL,
    SEARCH_TOOL,
    ToolLimits,
    TranscriptIndex,
    get_transcript_chunks,
    run_tool_call,
    search_terms,
    search_transcript,
    timeline_has_chunks,
    tool_definitions,
    tool_output_json,
    transcript_mode,
)


def chunk(ci: int, text: str, start: float = 0.0, end: float | None = None, speakers: list[str] | None = None) -> dict:
    return {"chunk_index": ci, "start_timestamp": start, "end_timestamp": start + 10 if end is None else end,
            "message_count": text.count("\n") + 1, "speakers": speakers or ["speaker_0", "speaker_1"],
            "full_text": text}


def recording(ri: int, chunks: list[dict], url: str = "https://crm.example/rec/1.mp3?sig=SECRET&exp=1") -> dict:
    return {"recording_index": ri, "call_id": f"call-{ri}", "start_time": "2025-01-02T10:15:00.000Z",
            "duration_seconds": 300, "recording_url": url, "recording_date": "02/01/2025",
            "recording_time": "10:15", "from_number": "0600000000", "to_number": "0100000000",
            "total_chunks": len(chunks), "chunks": chunks}


TIMELINE: list[dict[str, Any]] = [
    recording(0, [
        chunk(0, "speaker_0: Bonjour, je vous informe que l'appel est enregistré.\nspeaker_1: D'accord.", 12.4, 20),
        chunk(1, "speaker_0: Vous pouvez vous opposer à l'enregistrement.\nspeaker_1: Très bien.", 20, 31.5),
        chunk(2, "speaker_0: Parlons de votre mutuelle santé et des frais de dossier.", 75.4, 90),
    ]),
    recording(1, [
        chunk(0, "speaker_0: Rebonjour, l'appel est enregistré, frais de dossier offerts.", 3, 9),
        chunk(1, "speaker_1: " + "blabla " * 100, 6001.9, 6010),
    ], url=""),
]


# --- searchTranscript ------------------------------------------------------------------------


def test_search_shape_scores_and_order() -> None:
    res = search_transcript(TIMELINE, "Appel enregistré ; frais de dossier !")
    assert res["query"] == "Appel enregistré ; frais de dossier !"
    assert res["normalizedQuery"] == "appel enregistre frais de dossier"
    assert res["terms"] == ["appel", "enregistre", "frais", "dossier"]  # "de" < 3 chars
    assert (res["totalRecordings"], res["totalChunks"]) == (2, 5)
    got = [(m["recording_index"], m["chunk_index"], m["score"]) for m in res["matches"]]
    # (1,0) has all four terms; (0,0) appel+enregistre; (0,2) frais+dossier; (0,1) "enregistrement" ⊃ "enregistre"
    assert got == [(1, 0, 4), (0, 0, 2), (0, 2, 2), (0, 1, 1)]
    m = res["matches"][2]
    assert set(m) == {"recording_index", "chunk_index", "score", "minutage_secondes", "minutage", "start_timestamp",
                      "end_timestamp", "speakers", "recording_date", "recording_time", "recording_url", "preview_text"}
    assert (m["minutage"], m["minutage_secondes"], m["start_timestamp"], m["end_timestamp"]) == ("01:15", 75.4, 75.4, 90)
    assert m["recording_date"] == "02/01/2025" and m["recording_time"] == "10:15"
    assert m["recording_url"] == "https://crm.example/rec/1.mp3"  # signed query string never sent
    assert res["matches"][0]["recording_url"] == "N/A"
    assert "getTranscriptChunks" in res["note"]


def test_search_preview_and_minutage_over_99_minutes() -> None:
    res = search_transcript(TIMELINE, "blabla")
    (m,) = res["matches"]
    assert m["minutage"] == "100:01"
    assert len(m["preview_text"]) == 451 and m["preview_text"].endswith("…")
    assert m["preview_text"][:450] == TIMELINE[1]["chunks"][1]["full_text"][:450]
    short = search_transcript(TIMELINE, "mutuelle")["matches"][0]
    assert short["preview_text"] == TIMELINE[0]["chunks"][2]["full_text"]


def test_search_no_terms_and_no_match() -> None:
    res = search_transcript(TIMELINE, "le à de !!")
    assert res["terms"] == [] and res["matches"] == [] and "Aucun terme" in res["note"]
    res = search_transcript(TIMELINE, "rétractation")
    assert res["terms"] == ["retractation"] and res["matches"] == [] and "ABSENT" in res["note"]
    assert search_transcript([], "appel")["totalChunks"] == 0


def test_search_terms_distinct_first_40_and_min_length() -> None:
    words = [f"mot{i:02d}" for i in range(60)]
    assert search_terms(" ".join(words + words)) == words[:40]
    assert search_terms("Le CE de la RGPD", 2) == ["le", "ce", "de", "la", "rgpd"]
    assert search_terms("Le CE de la RGPD", 4) == ["rgpd"]


@pytest.mark.parametrize(("given", "expected"), [(None, 4), (0, 1), (-3, 1), (2, 2), (500, 4), (2.7, 2)])
def test_search_max_results_clamped(given: Any, expected: int) -> None:
    # 4 chunks match "appel enregistre frais dossier"; null ⇒ default 25.
    assert len(search_transcript(TIMELINE, "appel enregistré frais dossier", max_results=given)["matches"]) == expected


def test_search_min_term_length_clamped() -> None:
    assert search_transcript(TIMELINE, "a de appel", min_term_length=1)["terms"] == ["de", "appel"]  # min 2
    assert search_transcript(TIMELINE, "enregistrement appel", min_term_length=99)["terms"] == ["enregistrement"]  # 8
    assert search_transcript(TIMELINE, "de appel", min_term_length=None)["terms"] == ["appel"]  # null ⇒ 3


# --- getTranscriptChunks ---------------------------------------------------------------------


def refs(*pairs: tuple[int, int]) -> list[dict[str, int]]:
    return [{"recording_index": r, "chunk_index": c} for r, c in pairs]


def test_fetch_dedupes_sorts_adds_neighbours_and_drops_unknown() -> None:
    res = get_transcript_chunks(TIMELINE, refs((1, 0), (0, 2), (1, 0), (7, 0), (0, 9)), include_neighbors=1)
    assert res["requested"] == 4  # distinct references
    assert [(c["recording_index"], c["chunk_index"]) for c in res["chunks"]] == [(0, 1), (0, 2), (1, 0), (1, 1)]
    assert res["returned"] == 4 and res["truncated"] is False and res["maxChars"] == 20000
    first = res["chunks"][0]
    assert first["full_text"] == TIMELINE[0]["chunks"][1]["full_text"]
    assert first["minutage"] == "00:20" and first["speakers"] == ["speaker_0", "speaker_1"]
    assert "score" not in first and "preview_text" not in first
    assert "2 référence(s) inexistante(s)" in res["note"]


def test_fetch_keeps_first_n_distinct_refs() -> None:
    res = get_transcript_chunks(TIMELINE, refs((0, 2), (0, 0), (1, 0)), max_fetch=2)
    assert [(c["recording_index"], c["chunk_index"]) for c in res["chunks"]] == [(0, 0), (0, 2)]
    assert res["requested"] == 3 and "2 premiers" in res["note"]
    # the cap itself is clamped to 1..40 and neighbours to 0..2
    assert len(get_transcript_chunks(TIMELINE, refs((0, 2), (0, 0)), max_fetch=0)["chunks"]) == 1
    assert len(get_transcript_chunks(TIMELINE, refs((0, 0)), include_neighbors=9)["chunks"]) == 3


def test_fetch_budget_cuts_last_chunk_and_stops() -> None:
    long = [recording(0, [chunk(i, f"speaker_0: {'x' * 590} fin{i}") for i in range(4)])]
    res = get_transcript_chunks(long, refs((0, 0), (0, 1), (0, 2), (0, 3)), max_chars=1000)
    assert res["maxChars"] == 1000 and res["truncated"] is True and res["returned"] == 2
    a, b = res["chunks"]
    assert a["full_text"] == long[0]["chunks"][0]["full_text"]
    assert b["full_text"].endswith("…") and len(a["full_text"]) + len(b["full_text"]) == 1000
    assert long[0]["chunks"][1]["full_text"].startswith(b["full_text"][:-1])
    assert "Budget de 1000" in res["note"]
    # maxChars is clamped: 10 ⇒ 1000, 10**9 ⇒ 80000; null ⇒ 20000
    assert get_transcript_chunks(long, refs((0, 0)), max_chars=10)["maxChars"] == 1000
    assert get_transcript_chunks(long, refs((0, 0)), max_chars=10**9)["maxChars"] == 80000
    assert get_transcript_chunks(long, refs((0, 0)), max_chars=None)["maxChars"] == 20000


def test_fetch_reads_at_most_60_refs_and_empty_request() -> None:
    many = [recording(0, [chunk(i, f"speaker_0: c{i}") for i in range(80)])]
    res = get_transcript_chunks(many, refs(*[(0, i) for i in range(79, -1, -1)]), max_fetch=40)
    assert res["requested"] == 60  # only the first 60 references are read
    assert [c["chunk_index"] for c in res["chunks"]] == list(range(40, 80))
    empty = get_transcript_chunks(many, [])
    assert empty["returned"] == 0 and "Aucun chunk demandé" in empty["note"]


# --- dispatch, errors, schemas ---------------------------------------------------------------


def test_run_tool_call_defaults_from_limits_and_errors() -> None:
    limits = ToolLimits.normalized(max_search_results=2, max_chunk_fetch=1, max_chunk_chars=1500)
    res = run_tool_call(TIMELINE, SEARCH_TOOL, json.dumps({"query": "appel enregistré frais dossier",
                                                           "maxResults": None, "minTermLength": None}), limits)
    assert len(res["matches"]) == 2
    res = run_tool_call(TIMELINE, FETCH_TOOL, {"chunks": refs((0, 0), (0, 1)), "includeNeighbors": None,
                                               "maxChars": None}, limits)
    assert res["maxChars"] == 1500 and res["returned"] == 1
    # an explicit value wins over the operator default (clamped by the spec range, not the setting)
    res = run_tool_call(TIMELINE, SEARCH_TOOL, {"query": "appel enregistré frais dossier", "maxResults": 3}, limits)
    assert len(res["matches"]) == 3

    bad = {
        "{not json": SEARCH_TOOL,
        "[1, 2]": SEARCH_TOOL,
        json.dumps({"maxResults": 3}): SEARCH_TOOL,
        json.dumps({"query": "appel", "maxResults": "abc"}): SEARCH_TOOL,
        json.dumps({"query": "appel", "minTermLength": True}): SEARCH_TOOL,
        json.dumps({"chunks": "0,1"}): FETCH_TOOL,
        json.dumps({"chunks": [{"recording_index": "0", "chunk_index": 1}]}): FETCH_TOOL,
        json.dumps({"chunks": [{"recording_index": 0}]}): FETCH_TOOL,
        json.dumps({"chunks": refs((0, 0)), "maxChars": "beaucoup"}): FETCH_TOOL,
        json.dumps({"query": "x"}): "readWholeTranscript",
    }
    for args, name in bad.items():
        res = run_tool_call(TIMELINE, name, args, limits)
        assert set(res) == {"error"}, (name, args, res)
        assert res["error"].startswith(f"{name}: ")


def test_tool_definitions_are_strict_openai_function_tools() -> None:
    tools = tool_definitions(ToolLimits.normalized(max_search_results=12, max_chunk_chars=5000))
    assert [t["name"] for t in tools] == [SEARCH_TOOL, FETCH_TOOL]

    def check(node: dict) -> None:
        if node.get("type") == "object":
            assert node["additionalProperties"] is False
            assert node["required"] == list(node["properties"])
            for prop in node["properties"].values():
                check(prop)
        if node.get("type") == "array":
            check(node["items"])

    for t in tools:
        assert t["type"] == "function" and t["strict"] is True and t["description"]
        check(t["parameters"])
    search, fetch = (t["parameters"]["properties"] for t in tools)
    assert search["query"]["type"] == "string"
    assert search["maxResults"]["type"] == ["integer", "null"] and "null = 12" in search["maxResults"]["description"]
    assert search["minTermLength"]["type"] == ["integer", "null"]
    assert fetch["chunks"]["items"]["required"] == ["recording_index", "chunk_index"]
    assert fetch["includeNeighbors"]["type"] == ["integer", "null"]
    assert "null = 5000" in fetch["maxChars"]["description"]


def test_limits_are_normalized() -> None:
    lim = ToolLimits.normalized(max_rounds=1, max_search_results=99, max_chunk_fetch=100, max_chunk_chars=5)
    assert lim == ToolLimits(max_rounds=2, max_search_results=50, max_chunk_fetch=40, max_chunk_chars=1000)
    assert ToolLimits.normalized() == ToolLimits(8, 25, 20, 20000)


def test_transcript_mode_needs_chunks() -> None:
    assert transcript_mode(True, TIMELINE) == "tools"
    assert transcript_mode(False, TIMELINE) == "prompt"
    assert transcript_mode(True, []) == "prompt"
    assert transcript_mode(True, [recording(0, [])]) == "prompt"
    assert not timeline_has_chunks(None) and timeline_has_chunks(TIMELINE)


def test_index_falls_back_to_positions_like_gating() -> None:
    bare = [{"chunks": [{"full_text": "speaker_0: appel enregistré"}, {"full_text": "speaker_1: oui"}]}]
    idx = TranscriptIndex(bare)
    assert idx.keys() == [(0, 0), (0, 1)]
    m = search_transcript(bare, "appel")["matches"][0]
    assert (m["recording_index"], m["chunk_index"], m["minutage"], m["speakers"]) == (0, 0, "00:00", [])


# --- properties ------------------------------------------------------------------------------

WORDS = ["appel", "enregistré", "Opposition", "frais", "dossier", "mutuelle", "santé", "délai", "carence", "oui",
         "d'accord", "garanties", "C2S", "résiliation", "ORIAS", "courtier", "l'assurance", "100", "€", "bonjour"]

# A short word list repeated 1–80 times: chunk texts of a few to a few thousand characters, so small
# budgets really get cut.
texts = st.tuples(st.lists(st.sampled_from(WORDS), min_size=0, max_size=12), st.integers(1, 80)).map(
    lambda wr: "speaker_0: " + " ".join(wr[0] * wr[1]))
timelines = st.lists(
    st.lists(st.tuples(texts, st.floats(min_value=0, max_value=7200, allow_nan=False)), min_size=0, max_size=6),
    min_size=0, max_size=4,
).map(lambda recs: [recording(ri, [chunk(ci, t, s) for ci, (t, s) in enumerate(cs)]) for ri, cs in enumerate(recs)])
queries = st.lists(st.sampled_from(WORDS + ["le", "xyz", "a"]), min_size=0, max_size=8).map(" ".join)


def _keys(timeline: list[dict]) -> set[tuple[int, int]]:
    return {(r["recording_index"], c["chunk_index"]) for r in timeline for c in r["chunks"]}


def _text_of(timeline: list[dict], r: int, c: int) -> str:
    return timeline[r]["chunks"][c]["full_text"]


@settings(max_examples=150, deadline=None)
@given(timelines, queries, st.one_of(st.none(), st.integers(-5, 80)), st.one_of(st.none(), st.integers(0, 10)))
def test_search_properties(timeline: list[dict], query: str, max_results: int | None, min_len: int | None) -> None:
    res = search_transcript(timeline, query, max_results=max_results, min_term_length=min_len)
    keys = _keys(timeline)
    cap = 25 if max_results is None else max(1, min(50, max_results))
    got = [(m["recording_index"], m["chunk_index"]) for m in res["matches"]]
    assert set(got) <= keys and len(got) == len(set(got)) and len(got) <= cap
    order = [(-m["score"], m["recording_index"], m["chunk_index"]) for m in res["matches"]]
    assert order == sorted(order)
    # brute force: exactly the best-scored chunks with score > 0
    scores = {k: sum(1 for t in res["terms"] if t in norm(_text_of(timeline, *k))) for k in keys}
    expected = sorted((-s, *k) for k, s in scores.items() if s > 0)[:cap]
    assert order == expected
    assert len(res["terms"]) <= 40 and all(len(t) >= (3 if min_len is None else max(2, min(8, min_len)))
                                          for t in res["terms"])
    # deterministic, independent of the timeline object and of a prebuilt index
    again = search_transcript(copy.deepcopy(timeline), query, max_results=max_results, min_term_length=min_len)
    assert tool_output_json(again) == tool_output_json(res)
    via_index = search_transcript(TranscriptIndex(timeline), query, max_results=max_results, min_term_length=min_len)
    assert via_index == res


ref_lists = st.lists(st.one_of(st.tuples(st.integers(0, 3), st.integers(0, 5)),  # mostly existing chunks
                                st.tuples(st.integers(-1, 5), st.integers(-1, 8))), min_size=0, max_size=70)


@settings(max_examples=150, deadline=None)
@given(timelines, ref_lists, st.one_of(st.none(), st.integers(-1, 4)), st.one_of(st.none(), st.integers(0, 3000)),
       st.integers(0, 45))
def test_fetch_properties(timeline: list[dict], pairs: list[tuple[int, int]], neighbors: int | None,
                          max_chars: int | None, max_fetch: int) -> None:
    res = get_transcript_chunks(timeline, refs(*pairs), include_neighbors=neighbors, max_chars=max_chars,
                                max_fetch=max_fetch)
    keys = _keys(timeline)
    budget = 20000 if max_chars is None else max(1000, min(80000, max_chars))
    n = 0 if neighbors is None else max(0, min(2, neighbors))
    distinct = list(dict.fromkeys(pairs[:60]))
    kept = distinct[: max(1, min(40, max_fetch))]
    wanted = sorted({(r, c + d) for r, c in kept for d in range(-n, n + 1)} & keys)
    got = [(c["recording_index"], c["chunk_index"]) for c in res["chunks"]]
    assert set(got) <= keys  # only existing chunks
    assert got == wanted[: len(got)]  # sorted, and a prefix of what was asked for
    assert res["requested"] == len(distinct) and res["returned"] == len(got) and res["maxChars"] == budget
    total = sum(len(c["full_text"]) for c in res["chunks"])
    assert total <= budget  # the budget is never exceeded
    for i, c in enumerate(res["chunks"]):
        full = _text_of(timeline, c["recording_index"], c["chunk_index"])
        if c["full_text"] != full:  # only the last emitted chunk may be cut, and then we stopped
            assert i == len(got) - 1 and res["truncated"] and c["full_text"].endswith("…")
            assert full.startswith(c["full_text"][:-1])
    if not res["truncated"]:
        assert got == wanted
    else:
        assert sum(len(_text_of(timeline, *k)) for k in wanted) > budget  # cut only when it had to be
    again = get_transcript_chunks(copy.deepcopy(timeline), refs(*pairs), include_neighbors=neighbors,
                                  max_chars=max_chars, max_fetch=max_fetch)
    assert tool_output_json(again) == tool_output_json(res)
