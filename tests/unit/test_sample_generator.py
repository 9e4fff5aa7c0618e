"""Synthetic CRM data, recordings, transcripts and ground truth (auditflow_dagster.sample.generator)."""

from __future__ import annotations

import collections
import hashlib
import json
import os
import re
import subprocess
import sys
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditflow_dagster.core.audit_config import config_from_legacy_json
from auditflow_dagster.core.scoring import (
    StepScoreInput,
    compute_compliance,
    derived_step_score,
    step_ratio,
    verdict_for_ratio,
)
from auditflow_dagster.core.timeline import chunk_words
from auditflow_dagster.sample import generator as g

DAY = date(2025, 1, 2)
DAYS = [date(2025, 3, 3) + timedelta(days=k) for k in range(5)]
# Spec 02 §1.2: <uuid 8-4-4-4-12 hex>-DD-MM-YY-HHhMM-<digits>-<digits>.mp3
FILENAME_RE = re.compile(
    r"^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})-(\d{2})-(\d{2})-(\d{2})-(\d{2})h(\d{2})-(\d+)-(\d+)\.mp3$",
    re.IGNORECASE,
)
DETAIL_SECTIONS = (
    "information", "prospect", "conjoint", "enfants", "mails", "rendez_vous", "commentaires", "reclamations",
    "autres_contrats", "documents", "alertes", "elements_souscription", "tarification", "recordings", "raw_sections",
)


def _all_ids(days=DAYS, count=40) -> list[str]:
    return [g.fiche_id_for(d, i) for d in days for i in range(count)]


def _filename(url: str) -> str:
    return url.split("?", 1)[0].rsplit("/", 1)[-1]


# ---------------------------------------------------------------------------------------------
# Checklist
# ---------------------------------------------------------------------------------------------


def test_checklist_loads_with_the_legacy_importer():
    raw = json.loads(g.CHECKLIST_PATH.read_text(encoding="utf-8"))
    cfg = config_from_legacy_json(raw)
    assert len(cfg.steps) == 10
    assert [s.position for s in cfg.steps] == list(range(1, 11))
    assert {s.position for s in cfg.steps if s.is_critical} == {1, 6}
    for s in cfg.steps:
        assert 2 <= len(s.control_points) <= 4
        assert 1 <= s.weight <= 10
        assert s.keywords and s.prompt.strip() and s.description
    assert cfg.system_prompt and "renonciation" in cfg.system_prompt
    assert g.load_checklist() == cfg
    # the bundled text is ours, not the fixture's
    fixture = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "audit_config_18_points.json"
    if fixture.exists():
        theirs = json.loads(fixture.read_text(encoding="utf-8"))
        their_points = {p for s in theirs["auditSteps"] for p in s["controlPoints"]}
        assert not their_points & {p for s in cfg.steps for p in s.control_points}
        assert raw["systemPrompt"] != theirs["systemPrompt"]


# ---------------------------------------------------------------------------------------------
# Ids and determinism
# ---------------------------------------------------------------------------------------------


@given(st.dates(min_value=date(2000, 1, 1), max_value=date(2099, 12, 31)), st.integers(min_value=0, max_value=999))
@settings(max_examples=200, deadline=None)
def test_fiche_id_round_trip(day, index):
    fid = g.fiche_id_for(day, index)
    assert fid.isdigit() and len(fid) == 12
    assert g.parse_fiche_id(fid) == (day, index)


@pytest.mark.parametrize("bad", ["", "abc", "900000001", "920251302001", "820250102001", "92025010200", "9202501020011", "919990102001"])
def test_parse_fiche_id_rejects_foreign_ids(bad):
    assert g.parse_fiche_id(bad) is None
    assert g.fiche_details_payload(bad) is None
    assert g.ground_truth(bad) is None
    assert g.expected_audit(bad) is None


def _fingerprint_code() -> str:
    return (
        "import hashlib, json; from datetime import date; from auditflow_dagster.sample import generator as g; "
        "p = g.sales_list_payload(date(2025,1,2), date(2025,1,3), True); "
        "d = g.fiche_details_payload('920250102007', True); "
        "t = g.transcript_for_recording_url(p['fiches'][5]['recordings'][0]['recording_url']) if p['fiches'][5]['recordings'] else {}; "
        "gt = sorted((str(k), v['statut']) for k, v in g.ground_truth('920250102007').items()); "
        "print(hashlib.sha256(json.dumps([p, d, t, gt], sort_keys=True, ensure_ascii=False).encode()).hexdigest())"
    )


def test_data_is_stable_across_processes():
    outs = set()
    for hashseed in ("1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": hashseed}
        res = subprocess.run([sys.executable, "-c", _fingerprint_code()], capture_output=True, text=True, env=env, check=True)
        outs.add(res.stdout.strip())
    assert len(outs) == 1
    # and equal to this process
    p = g.sales_list_payload(date(2025, 1, 2), date(2025, 1, 3), True)
    d = g.fiche_details_payload("920250102007", True)
    t = g.transcript_for_recording_url(p["fiches"][5]["recordings"][0]["recording_url"]) if p["fiches"][5]["recordings"] else {}
    gt = sorted((str(k), v["statut"]) for k, v in g.ground_truth("920250102007").items())
    here = hashlib.sha256(json.dumps([p, d, t, gt], sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    assert outs == {here}


def test_days_differ_and_repeat():
    a1 = g.fiches_for_day(DAY)
    a2 = g.fiches_for_day(DAY)
    b = g.fiches_for_day(DAY + timedelta(days=1))
    assert a1 == a2
    assert [f["nom"] for f in a1] != [f["nom"] for f in b]
    assert g.fiches_for_day(DAY, 5) == a1[:5]
    assert len(g.fiches_for_day(DAY, 7)) == 7
    assert g.fiches_for_day(DAY, 0) == []


# ---------------------------------------------------------------------------------------------
# Sales list
# ---------------------------------------------------------------------------------------------


def test_sales_list_shape_and_window():
    body = g.sales_list_payload(DAY, DAY + timedelta(days=2), True, fiches_per_day=10)
    assert body["total"] == len(body["fiches"]) == 30
    days = collections.Counter(f["date_insertion"][:10] for f in body["fiches"])
    assert days == {"02/01/2025": 10, "03/01/2025": 10, "04/01/2025": 10}
    keys = {"id", "cle", "nom", "prenom", "telephone", "telephone_2", "email", "statut", "date_insertion", "date_modification", "recordings"}
    for f in body["fiches"]:
        assert set(f) == keys
        assert f["statut"] == "Vente"
        assert re.fullmatch(r"\d{2}/\d{2}/\d{4} \d{2}:\d{2}", f["date_insertion"])
        assert re.fullmatch(r"0[67]\d{8}", f["telephone"])
        assert f["cle"] and "@" in f["email"]
    assert len({f["id"] for f in body["fiches"]}) == 30
    no_rec = g.sales_list_payload(DAY, DAY, False, fiches_per_day=10)
    assert all(f["recordings"] == [] for f in no_rec["fiches"])
    assert any(f["recordings"] for f in body["fiches"])
    assert g.sales_list_payload(DAY, DAY - timedelta(days=1), True) == {"fiches": [], "total": 0}
    with pytest.raises(ValueError):
        g.sales_list_payload(DAY, DAY + timedelta(days=400), False)


def test_sales_rows_agree_with_details():
    for f in g.fiches_for_day(DAY, 10):
        d = g.fiche_details_payload(f["id"])
        assert d["information"]["fiche_id"] == f["id"]
        assert d["information"]["cle"] == f["cle"]
        assert d["information"]["date_insertion"] == f["date_insertion"]
        assert d["prospect"]["nom"] == f["nom"] and d["prospect"]["mobile"] == f["telephone"]
        assert d["recordings"] == f["recordings"]


def test_distribution_of_groups_agencies_and_recordings():
    rows = [f for d in DAYS for f in g.fiches_for_day(d, 40)]
    counts = collections.Counter(len(f["recordings"]) for f in rows)
    assert set(counts) == {0, 1, 2, 3}
    zero_share = counts[0] / len(rows)
    assert 0.02 <= zero_share <= 0.16  # ~1 in 12
    details = [g.fiche_details_payload(f["id"]) for f in rows[:80]]
    assert len({d["information"]["groupe"] for d in details}) >= 3
    assert {d["information"]["groupe"] for d in details} <= {"R1", "R2", "R3", "R4"}
    assert len({d["information"]["agence_nom"] for d in details}) >= 2
    users = {u["id"]: u for u in g.users_payload()["data"]["utilisateurs"]}
    for d in details:
        assert d["information"]["attribution_user_id"] in users


# ---------------------------------------------------------------------------------------------
# Details
# ---------------------------------------------------------------------------------------------


def test_every_detail_section_is_populated_somewhere():
    details = [g.fiche_details_payload(fid) for fid in _all_ids(DAYS[:2])]
    for d in details:
        assert d["success"] is True and d["message"]
        for key in DETAIL_SECTIONS:
            assert key in d
        assert "mail_devis" not in d
        assert isinstance(d["information"]["etiquettes"], list) and d["information"]["etiquettes"]
        for e in d["information"]["etiquettes"]:
            assert set(e) == {"nom", "date", "style"}
        es = d["elements_souscription"]
        assert es["produit"]["formule_nom"] and es["paiement"]["compte_prelevement"]["titulaire_nom"]
        assert isinstance(d["raw_sections"], dict) and all(isinstance(v, str) for v in d["raw_sections"].values())
        for t in d["tarification"]:
            for gm in t["gammes"]:
                for f in gm["formules"]:
                    assert isinstance(f["prix"], str) and all(isinstance(v, str) for v in f["details"].values())
    for key in ("enfants", "mails", "rendez_vous", "commentaires", "reclamations", "autres_contrats", "documents", "alertes", "tarification"):
        assert any(d[key] for d in details), key
    assert any(d["conjoint"] for d in details) and any(d["conjoint"] is None for d in details)
    assert any(d["elements_souscription"]["ancien_contrat"] for d in details)
    assert any(d["elements_souscription"]["ancien_contrat"] is None for d in details)


def test_mail_devis_only_when_requested():
    ids = _all_ids(DAYS[:1])
    with_md = [g.fiche_details_payload(fid, include_mail_devis=True) for fid in ids]
    assert all("mail_devis" in d for d in with_md)
    objs = [d["mail_devis"] for d in with_md if d["mail_devis"] is not None]
    assert objs and len(objs) < len(ids)  # some null markers
    md = objs[0]
    assert set(md) == {"mail_devis", "customer_info", "garanties_link", "garanties_details"}
    gd = md["garanties_details"]
    assert {"gamme", "product_name", "formule", "agence_info", "fiche_info", "subscriber_info", "documents", "menu_links", "garanties", "notes"} <= set(gd)
    formats = set()
    for cat in gd["garanties"].values():
        assert {"category_name", "note_references", "items", "subcategories"} <= set(cat)
        subs = cat["subcategories"]
        formats.add("array" if subs and all(isinstance(v, list) for v in subs.values()) else "named")
    assert formats == {"array", "named"}
    assert "mail_devis" not in g.fiche_details_payload(ids[0], include_mail_devis=False)


def test_unknown_or_out_of_range_fiches():
    assert g.fiche_details_payload(g.fiche_id_for(DAY, 39)) is not None
    assert g.fiche_details_payload(g.fiche_id_for(DAY, 40)) is None
    assert g.fiche_details_payload(g.fiche_id_for(DAY, 40), fiches_per_day=50) is not None
    assert g.fiche_details_payload(g.fiche_id_for(DAY, 999), fiches_per_day=None) is not None
    body = g.fiche_details_payload(g.fiche_id_for(DAY, 3), include_recordings=False)
    assert body["recordings"] == []


def test_payloads_pass_the_gateway_client_validation():
    crm = pytest.importorskip("auditflow_dagster.resources.crm")
    body = g.sales_list_payload(DAY, DAY, True)
    validated = crm.validate_sales_payload(body)
    assert validated["total"] == 40 and len(validated["fiches"]) == 40
    assert sum(len(f["recordings"]) for f in validated["fiches"]) == sum(len(f["recordings"]) for f in body["fiches"])
    fid = g.fiche_id_for(DAY, 4)
    d = crm.validate_details_payload(g.fiche_details_payload(fid, True), fiche_id=fid, path="/fiches/by-id/x")
    assert d["information"]["fiche_id"] == fid and "mail_devis" in d


def test_users_and_groups():
    users = g.users_payload()
    assert users["success"] is True
    rows = users["data"]["utilisateurs"]
    assert users["data"]["total_count"] == len(rows) == 12
    for u in rows:
        assert u["id"] and "nom" in u and "prenom" in u
    groups = g.groups_payload(False)["data"]["groupes"]
    assert [x["nom"] for x in groups] == ["R1", "R2", "R3", "R4"]
    assert all("user_ids" not in x for x in groups)
    with_users = g.groups_payload(True)["data"]["groupes"]
    ids = [uid for x in with_users for uid in x["user_ids"]]
    assert sorted(ids) == sorted(u["id"] for u in rows)


# ---------------------------------------------------------------------------------------------
# Recordings, URLs, audio
# ---------------------------------------------------------------------------------------------


def test_recording_objects_follow_the_gateway_shape():
    seen_in = False
    for fid in _all_ids(DAYS[:2]):
        day, _ = g.parse_fiche_id(fid)
        recs = g.recordings_for_fiche(fid, "http://crm.local:8101/")
        starts = []
        for r in recs:
            assert set(r) == {"call_id", "start_time", "duration_seconds", "direction", "from_number", "to_number", "answered", "recording_url", "transcription"}
            assert re.fullmatch(r"[1-9]\d{18}", r["call_id"])
            assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}[+-]\d{2}:\d{2}", r["start_time"])
            st_ = datetime.fromisoformat(r["start_time"])
            assert st_.tzinfo is not None and st_.date() == day
            starts.append(st_)
            assert r["duration_seconds"] > 30 and r["answered"] is True and r["transcription"] is None
            assert re.fullmatch(r"33\d{9}", r["from_number"]) and re.fullmatch(r"33\d{9}", r["to_number"])
            assert r["direction"] in ("in", "out")
            seen_in |= r["direction"] == "in"
            url = r["recording_url"]
            assert url.startswith("http://crm.local:8101/recordings/") and "?sig=" in url
            m = FILENAME_RE.match(_filename(url))
            assert m, url
            assert (m.group(2), m.group(3), m.group(4)) == (f"{st_:%d}", f"{st_:%m}", f"{st_:%y}")
            assert (m.group(5), m.group(6)) == (f"{st_:%H}", f"{st_:%M}")
            assert (m.group(7), m.group(8)) == (r["from_number"], r["to_number"])
        assert starts == sorted(starts)
        assert len({r["call_id"] for r in recs}) == len(recs)
    assert seen_in


def test_recording_url_decodes_back_to_its_fiche():
    fid = next(f for f in _all_ids(DAYS[:1]) if len(g.recordings_for_fiche(f)) >= 2)
    recs = g.recordings_for_fiche(fid, "https://somewhere.example")
    for r_idx, rec in enumerate(recs):
        assert g.parse_recording_ref(rec["recording_url"]) == (fid, r_idx)
        name = _filename(rec["recording_url"])
        assert g.parse_recording_ref(name) == (fid, r_idx)
        # host and query do not matter
        other = f"http://other.host/x/recordings/{name}?sig=zzz#frag"
        assert g.transcript_for_recording_url(other) == g.transcript_for_recording_url(rec["recording_url"])
    name = _filename(recs[0]["recording_url"])
    tampered = name[:20] + ("0" if name[20] != "0" else "1") + name[21:]
    assert g.parse_recording_ref(tampered) is None
    beyond = g.recording_filename(fid, 0).replace("-4000-", "-4009-")
    assert g.parse_recording_ref(beyond) is None
    with pytest.raises(KeyError):
        g.transcript_for_recording_url("https://x/recordings/nope.mp3")
    with pytest.raises(KeyError):
        g.audio_bytes_for_recording_url("https://x/recordings/nope.mp3")


def test_signature():
    fid = next(f for f in _all_ids(DAYS[:1]) if g.recordings_for_fiche(f))
    url = g.recordings_for_fiche(fid)[0]["recording_url"]
    name, sig = _filename(url), url.split("sig=", 1)[1]
    assert g.verify_signature(name, sig)
    assert not g.verify_signature(name, sig[:-1] + ("0" if sig[-1] != "0" else "1"))
    assert not g.verify_signature(name, None)


def test_audio_bytes_map_back_to_the_transcript():
    fid = next(f for f in _all_ids(DAYS[:1]) if g.recordings_for_fiche(f))
    url = g.recordings_for_fiche(fid)[0]["recording_url"]
    data = g.audio_bytes_for_recording_url(url)
    assert data.startswith(b"ID3") and b"\xff\xfb" in data and len(data) < 2048
    assert _filename(url).encode() in data
    assert g.audio_bytes_for_recording_url(url) == data
    assert g.transcript_for_audio_bytes(data) == g.transcript_for_recording_url(url)
    with pytest.raises(KeyError):
        g.transcript_for_audio_bytes(b"ID3 random noise")


# ---------------------------------------------------------------------------------------------
# Transcripts
# ---------------------------------------------------------------------------------------------


def test_transcripts_have_the_elevenlabs_shape_and_span_several_chunks():
    types = collections.Counter()
    n_recs = 0
    for fid in _all_ids(DAYS[:1]):
        for rec in g.recordings_for_fiche(fid):
            n_recs += 1
            tr = g.transcript_for_recording_url(rec["recording_url"])
            assert set(tr) == {"transcription_id", "text", "language_code", "language_probability", "words"}
            assert tr["language_code"] == "fra" and 0.9 < tr["language_probability"] <= 1.0
            assert tr["transcription_id"]
            prev_start = 0.0
            for w in tr["words"]:
                assert set(w) == {"text", "start", "end", "type", "speaker_id", "logprob"}
                assert w["type"] in ("word", "spacing", "audio_event")
                assert w["speaker_id"] in ("speaker_0", "speaker_1")
                assert w["end"] >= w["start"] >= prev_start
                assert w["logprob"] <= 0.0
                prev_start = w["start"]
                types[w["type"]] += 1
            assert tr["text"] == "".join(w["text"] for w in tr["words"])
            assert tr["words"][-1]["end"] <= rec["duration_seconds"]
            chunks = chunk_words(tr["words"])
            assert len(chunks) >= 3
            assert chunks[0]["full_text"].startswith("speaker_0: ")
            lines = [ln for c in chunks for ln in c["full_text"].split("\n")]
            speakers = [ln.split(":", 1)[0] for ln in lines]
            assert all(a != b for a, b in zip(speakers, speakers[1:]))  # turns alternate
            assert all(c["message_count"] == 10 for c in chunks[:-1])
    assert n_recs > 30
    assert types["word"] and types["spacing"] and types["audio_event"]


# ---------------------------------------------------------------------------------------------
# Ground truth and expected audit
# ---------------------------------------------------------------------------------------------


def test_ground_truth_locations_are_real():
    cfg = g.load_checklist()
    expected_keys = {(s.position, i) for s in cfg.steps for i in range(1, len(s.control_points) + 1)}
    statuses = collections.Counter()
    spread = 0
    for fid in _all_ids(DAYS[:2]):
        gt = g.ground_truth(fid)
        assert set(gt) == expected_keys
        recs = g.recordings_for_fiche(fid)
        chunks = [chunk_words(g.transcript_for_recording_url(r["recording_url"])["words"]) for r in recs]
        used = set()
        for key, v in gt.items():
            statuses[v["statut"]] += 1
            if v["statut"] == "ABSENT":
                assert v["recording_index"] is None and v["chunk_index"] is None and v["text"] is None
                continue
            used.add(v["recording_index"])
            assert v["call_id"] == recs[v["recording_index"]]["call_id"]
            chunk = chunks[v["recording_index"]][v["chunk_index"]]
            assert "speaker_0: " in chunk["full_text"] and v["text"] in chunk["full_text"]
            assert v["speaker"] == "speaker_0"
            assert chunk["start_timestamp"] <= v["start"] <= chunk["end_timestamp"]
        spread += len(used) >= 2
        if not recs:
            assert all(v["statut"] == "ABSENT" for v in gt.values())
    assert set(statuses) == {"PRESENT", "PARTIEL", "ABSENT"}
    assert statuses["PRESENT"] > statuses["ABSENT"] > 0 and statuses["PARTIEL"] > 0
    assert spread > 5  # items spread over several calls


def test_expected_audit_matches_the_scoring_rules():
    niveaux = collections.Counter()
    for fid in _all_ids(DAYS[:3]):
        exp = g.expected_audit(fid)
        gt = g.ground_truth(fid)
        inputs = []
        for s in exp["steps"]:
            statuts = [gt[(s["position"], i)]["statut"] for i in range(1, len(s["statuts"]) + 1)]
            assert s["statuts"] == statuts
            ratio = step_ratio(statuts)
            assert s["score"] == derived_step_score(ratio, s["weight"])
            assert s["conforme"] == verdict_for_ratio(ratio)
            inputs.append(StepScoreInput(position=s["position"], weight=s["weight"], is_critical=s["is_critical"], score=s["score"], conforme=s["conforme"]))
        if not g.recordings_for_fiche(fid):
            assert exp["auditable"] is False and exp["compliance"] is None
            niveaux["none"] += 1
            continue
        assert exp["auditable"] is True
        assert exp["compliance"] == compute_compliance(inputs)
        assert exp["compliance"].poids_total == 72
        niveaux[exp["compliance"].niveau] += 1
        crit_fail = any(s["is_critical"] and s["conforme"] != "CONFORME" for s in exp["steps"])
        assert (exp["compliance"].niveau == "REJET") == crit_fail
    assert niveaux["REJET"] >= 10 and niveaux["EXCELLENT"] >= 10 and niveaux["none"] >= 1


# ---------------------------------------------------------------------------------------------
# Personal data in the calls (issue 11): valid values, so the redaction must catch them
# ---------------------------------------------------------------------------------------------


def test_personal_data_is_valid_said_and_redacted():
    from auditflow_dagster.core.redaction import (
        iban_is_valid,
        luhn_is_valid,
        nir_is_valid,
        redact_timeline,
    )

    said = collections.Counter()
    for fid in _all_ids(DAYS[:2]):
        p = g.personal_data(fid)
        digits = {k: p[k].replace(" ", "") for k in ("iban", "carte", "nir", "mobile")}
        assert iban_is_valid(p["iban"]) and p["iban"].startswith("FR76 ") and len(digits["iban"]) == 27
        assert luhn_is_valid(digits["carte"]) and len(digits["carte"]) == 16 and digits["carte"][0] == "4"
        assert nir_is_valid(digits["nir"])
        assert re.fullmatch(r"0[67]\d{8}", digits["mobile"]) and "@" in p["email"]
        said.update(p["said"])
        recs = g.recordings_for_fiche(fid)
        timeline = [{"recording_index": r, "from_number": rec["from_number"], "to_number": rec["to_number"],
                     "chunks": chunk_words(g.transcript_for_recording_url(rec["recording_url"])["words"])}
                    for r, rec in enumerate(recs)]
        original = json.dumps(timeline, ensure_ascii=False)
        for key in p["said"]:
            assert (p[key] if key != "service_tel" else g.SERVICE_TEL) in original, (fid, key)
        redacted = json.dumps(redact_timeline(timeline), ensure_ascii=False)
        flat = redacted.replace(" ", "")
        for value in [*(p[k] for k in ("iban", "carte", "nir", "mobile", "email")), *p["phones"]]:
            assert value not in redacted and value.replace(" ", "") not in flat, (fid, value)
    # every kind is said in some calls and not in others
    n = len(_all_ids(DAYS[:2]))
    assert all(0 < said[k] < n for k in ("iban", "carte", "nir", "mobile", "email", "service_tel")), said


def test_iban_is_a_rib_with_its_key():
    """Bank (5), branch (5), account (11) and the RIB key: the last two of the 23 digits drawn
    before this key existed, so the fiche's later draws (quality, recordings, statuses) are unchanged."""
    for fid in _all_ids(DAYS[:1]):
        iban = g._base(fid)["iban"].replace(" ", "")
        bank, branch, account, key = iban[4:9], iban[9:14], iban[14:25], iban[25:]
        assert int(key) == 97 - (89 * int(bank) + 15 * int(branch) + 3 * int(account)) % 97
