"""What the LLM sees when personal data is redacted (auditflow_dagster.core.privacy, issue 11 §1-2)."""

from __future__ import annotations

import json
from datetime import date

from auditflow_dagster.core import chat as chat_core
from auditflow_dagster.core import privacy
from auditflow_dagster.core.evidence import gate_step, invalid_citations
from auditflow_dagster.core.prompts import build_step_prompt, build_tools_user_prompt
from auditflow_dagster.core.redaction import FACTS_HEADER, facts_text, spoken_facts
from auditflow_dagster.core.timeline import build_timeline, timeline_text
from auditflow_dagster.core.transcript_tools import (
    get_transcript_chunks,
    search_transcript,
)
from auditflow_dagster.sample import generator as g

DAY = date(2025, 3, 3)


def _timeline(fiche_id: str) -> list[dict]:
    recs = []
    for rec in g.recordings_for_fiche(fiche_id):
        words = g.transcript_for_recording_url(rec["recording_url"])["words"]
        recs.append({**rec, "has_transcription": True, "transcription_data": {"words": words},
                     "recording_date": "03/03/2025", "recording_time": "10:00"})
    return build_timeline(recs)


def _fiche_saying(*kinds: str) -> str:
    return next(f for f in (g.fiche_id_for(DAY, i) for i in range(40)) if set(kinds) <= g.personal_data(f)["said"])


def _values(fiche_id: str) -> list[str]:
    p = g.personal_data(fiche_id)
    return [*(p[k] for k in ("iban", "carte", "nir", "mobile", "email")), *p["phones"]]


def _leaks(blob: str, fiche_id: str) -> list[str]:
    flat = blob.replace(" ", "")
    return [v for v in _values(fiche_id) if v in blob or v.replace(" ", "") in flat]


def test_llm_view_redacts_text_and_headers_and_keeps_addresses():
    fid = _fiche_saying("iban", "carte", "nir", "mobile", "email")
    original = _timeline(fid)
    assert _leaks(json.dumps(original, ensure_ascii=False), fid)  # the stored transcript has them
    view = privacy.llm_view(original)
    assert privacy.is_redacted(view) and not privacy.is_redacted(original)
    assert _leaks(json.dumps(privacy.tools_view(view), ensure_ascii=False), fid) == []
    assert _leaks(timeline_text(view), fid) == []
    text = timeline_text(view)
    for marker in ("[IBAN]", "[CARTE]", "[NIR]", "[TEL]", "[EMAIL]"):
        assert marker in text
    # same recordings and chunks, same addresses and times, only the text differs
    assert [(r["recording_index"], r["call_id"], r["recording_url"]) for r in view] == \
        [(r["recording_index"], r["call_id"], r["recording_url"]) for r in original]
    for r_view, r_orig in zip(view, original):
        assert r_view["from_number"] == r_view["to_number"] == "[TEL]"
        assert [(c["chunk_index"], c["start_timestamp"], c["speakers"]) for c in r_view["chunks"]] == \
            [(c["chunk_index"], c["start_timestamp"], c["speakers"]) for c in r_orig["chunks"]]
    # the facts were computed on the original text and are rebuilt from the view
    assert privacy.stored_facts(view) == spoken_facts(original)
    assert {f.kind for f in privacy.stored_facts(view)} >= {"IBAN", "CARTE", "NIR", "TEL", "EMAIL"}
    assert any(f.kind == "IBAN" and f.speaker == g.CLIENT for f in privacy.stored_facts(view))
    # idempotent: a view stays itself (its facts are not lost)
    assert privacy.llm_view(view) == view
    assert original == _timeline(fid)  # the input is not modified


def test_facts_section_and_metadata_only_for_a_redacted_view():
    fid = _fiche_saying("iban")
    original = _timeline(fid)
    view = privacy.llm_view(original)
    assert privacy.facts_section(original) is None and privacy.personal_data_metadata(original) is None
    section = privacy.facts_section(view)
    assert section == facts_text(spoken_facts(original)) and section.startswith(FACTS_HEADER)
    assert "un IBAN (coordonnées bancaires) a été énoncé par speaker_1" in section
    meta = privacy.personal_data_metadata(view)
    assert meta["redacted"] is True
    assert {"kind": "IBAN", "speaker": "speaker_1"}.items() <= meta["spoken"][
        next(i for i, f in enumerate(meta["spoken"]) if f["kind"] == "IBAN")].items()
    assert _leaks(json.dumps(meta), fid) == []


def test_tools_view_masks_phone_numbers_of_recording_urls_only():
    fid = _fiche_saying("iban")
    original = _timeline(fid)
    assert privacy.tools_view(original) is original  # not redacted: untouched
    view = privacy.llm_view(original)
    tools = privacy.tools_view(view)
    for rec, src in zip(tools, view):
        assert "[TEL]-[TEL].mp3" in rec["recording_url"] and rec["chunks"] is src["chunks"]
        assert src["recording_url"] == next(r for r in original if r["call_id"] == src["call_id"])["recording_url"]
    found = search_transcript(tools, "IBAN BIC banque")
    fetched = get_transcript_chunks(tools, [{"recording_index": m["recording_index"], "chunk_index": m["chunk_index"]}
                                            for m in found["matches"]])
    assert "[IBAN]" in json.dumps(fetched, ensure_ascii=False)
    assert _leaks(json.dumps([found, fetched], ensure_ascii=False), fid) == []


def test_a_quote_with_a_placeholder_passes_gating_against_the_view():
    fid = _fiche_saying("iban")
    original = _timeline(fid)
    view = privacy.llm_view(original)
    rec, chunk, line = next((r, c, line) for r in view for c in r["chunks"] for line in c["full_text"].split("\n")
                            if "[IBAN]" in line)
    quote = line.split(": ", 1)[1]
    cite = {"texte": quote, "recording_index": rec["recording_index"], "chunk_index": chunk["chunk_index"]}
    assert invalid_citations([cite], view, 12) == []
    assert invalid_citations([cite], original, 12) == [cite]  # the original text has the digits instead
    step = {"traite": True, "conforme": "CONFORME", "score": 2, "minutages": [], "mots_cles_trouves": [],
            "commentaire_global": "", "niveau_conformite": "BON", "erreurs_transcription_tolerees": 0,
            "points_controle": [{"point": "IBAN", "statut": "PRESENT", "commentaire": "", "minutages": [],
                                 "citations": [{**cite, "minutage": "00:00"}], "erreur_transcription_notee": False,
                                 "variation_phonetique_utilisee": None}]}
    gated, stats = gate_step(step, 2, view)
    assert stats.removed_citations == 0 and gated["points_controle"][0]["statut"] == "PRESENT"


def test_prompts_get_the_facts_section_only_when_given():
    cfg = g.load_checklist()
    step = next(s for s in cfg.steps if s.position == 8)
    fid = _fiche_saying("iban")
    view = privacy.llm_view(_timeline(fid))
    block = timeline_text(view)
    facts = privacy.facts_section(view)
    plain = build_step_prompt(cfg, step, block, total_steps=10)
    assert build_step_prompt(cfg, step, block, total_steps=10, facts=None) == plain
    with_facts = build_step_prompt(cfg, step, block, total_steps=10, facts=facts)
    assert with_facts.replace(facts.strip() + "\n\n", "", 1) == plain
    assert with_facts.index(block) < with_facts.index(FACTS_HEADER) < with_facts.index("ÉTAPE 8/10")
    tools_plain = build_tools_user_prompt(cfg, step, total_steps=10)
    tools = build_tools_user_prompt(cfg, step, total_steps=10, facts=facts)
    assert tools == facts.strip() + "\n\n" + tools_plain


def test_chat_helpers():
    fiche = {"fiche_id": "1", "prospect_nom": "DUPONT", "prospect_email": "a.b@example.fr", "prospect_tel": "0612345678",
             "groupe": "R1"}
    red = privacy.redact_fiche_facts(fiche)
    assert red == {**fiche, "prospect_email": "[EMAIL]", "prospect_tel": "[TEL]"} and fiche["prospect_tel"] == "0612345678"
    assert privacy.redact_fiche_facts({**fiche, "prospect_email": None, "prospect_tel": ""})["prospect_tel"] == ""
    items = [{"role": "user", "content": "Mon IBAN FR76 3000 6000 0112 3456 7890 189 ?"}, {"role": "assistant", "content": "Bien."}]
    assert privacy.redact_chat_items(items) == [{"role": "user", "content": "Mon IBAN [IBAN] ?"}, items[1]]
    view = privacy.llm_view(_timeline(_fiche_saying("iban")))
    ctx = chat_core.fiche_context(fiche=red, recordings={"total": 1}, audits=[], timeline=view,
                                  facts=privacy.facts_section(view))
    assert "- Email : [EMAIL]" in ctx and "- Téléphone : [TEL]" in ctx
    assert ctx.index(timeline_text(view)) < ctx.index(FACTS_HEADER) < ctx.index("CITATIONS")
    assert FACTS_HEADER not in chat_core.fiche_context(fiche=fiche, recordings={}, audits=[], timeline=view)
