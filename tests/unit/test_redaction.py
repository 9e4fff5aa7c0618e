"""Personal-data redaction (issue 11 §1, §2): per-kind examples, near misses, properties, the
labelled utterance set (recall / false positives) and the timeline helpers."""

from __future__ import annotations

import copy
import importlib.util
import json
import random
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditflow_dagster.core.redaction import (
    KINDS,
    PLACEHOLDERS,
    Finding,
    SpokenFact,
    facts_text,
    iban_is_valid,
    luhn_is_valid,
    nir_is_valid,
    redact,
    redact_timeline,
    spoken_facts,
)
from auditflow_dagster.core.timeline import build_timeline, timeline_text

DATA = Path(__file__).resolve().parents[1] / "data"
DATASET = DATA / "pii_utterances.jsonl"


def _load_generator():
    spec = importlib.util.spec_from_file_location("make_pii_utterances", DATA / "make_pii_utterances.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


gen = _load_generator()


def kinds_of(text: str) -> list[str]:
    return [f.kind for f in redact(text).findings]


# --------------------------------------------------------------------------- checksums


def test_checksums_on_reference_values():
    assert iban_is_valid("FR76 3000 6000 0112 3456 7890 189")
    assert iban_is_valid("DE89370400440532013000")
    assert iban_is_valid("GB29 NWBK 6016 1331 9268 19")
    assert not iban_is_valid("FR76 3000 6000 0112 3456 7890 188")
    assert not iban_is_valid("FR76 3000 6000 0112 3456 7890 18")  # wrong length
    assert luhn_is_valid("4970101234567893") and not luhn_is_valid("4970101234567897")
    assert nir_is_valid("1 85 05 78 006 084 91") is (97 - 1850578006084 % 97 == 91)
    body = "1850578006084"
    assert nir_is_valid(body + f"{97 - int(body) % 97:02d}")
    corsica = "285052A006084"
    key = 97 - int(corsica.replace("2A", "19")) % 97
    assert nir_is_valid(f"{corsica}{key:02d}")
    assert not nir_is_valid(f"{corsica}{key % 97 + 1:02d}")


# --------------------------------------------------------------------------- per-kind examples

VALID_NIR = "1850578006084" + f"{97 - 1850578006084 % 97:02d}"  # 185057800608436
SPACED_NIR = " ".join(gen.group(VALID_NIR, [1, 2, 2, 2, 3, 3, 2]))

POSITIVE = [
    # IBAN
    ("Mon IBAN c'est FR76 3000 6000 0112 3456 7890 189, voilà.", "Mon IBAN c'est [IBAN], voilà."),
    ("FR7630006000011234567890189", "[IBAN]"),
    ("c'est fr76 3000 6000 0112 3456 7890 189", "c'est [IBAN]"),
    ("IBAN : F R 76 30 00 60 00 01 12 34 56 78 90 18 9.", "IBAN : [IBAN]."),
    ("F R soixante-seize, trente mille six, zéro zéro zéro zéro un, douze, trente-quatre, cinquante-six, "
     "soixante-dix-huit, quatre-vingt-dix, cent quatre-vingt-neuf, c'est ça.", "[IBAN], c'est ça."),
    ("FR sept six, trois zéro zéro zéro, six zéro zéro zéro, zéro un un deux, trois quatre cinq six, "
     "sept huit neuf zéro, un huit neuf", "[IBAN]"),
    ("le compte allemand DE89 3704 0044 0532 0130 00 et l'anglais GB29 NWBK 6016 1331 9268 19",
     "le compte allemand [IBAN] et l'anglais [IBAN]"),
    (f"RIB 30006 00001 12345678901 {gen.rib_key('30006', '00001', '12345678901'):02d}", "RIB [IBAN]"),
    # card
    ("Ma carte 4970 1012 3456 7893, expire 12/27", "Ma carte [CARTE], expire 12/27"),
    ("Ma carte 4970 1012 3456 7893 12/27", "Ma carte [CARTE] 12/27"),
    ("carte n°4970-1012-3456-7893.", "carte n°[CARTE]."),
    ("Amex 3714 496353 98431", "Amex [CARTE]"),
    ("quatre neuf sept zéro, un zéro un deux, trois quatre cinq six, sept huit neuf trois", "[CARTE]"),
    ("quarante-neuf, soixante-dix, dix, douze, trente-quatre, cinquante-six, soixante-dix-huit, quatre-vingt-treize", "[CARTE]"),
    ("quatre mille neuf cent soixante-dix, mille douze, trois mille quatre cent cinquante-six, "
     "sept mille huit cent quatre-vingt-treize", "[CARTE]"),
    # NIR
    (f"Mon numéro de sécu : {SPACED_NIR}.", "Mon numéro de sécu : [NIR]."),
    (f"c'est {VALID_NIR}", "c'est [NIR]"),
    (f"{' '.join(gen.group(VALID_NIR[:13], [1, 2, 2, 2, 3, 3]))}, clé {VALID_NIR[-2:]}", "[NIR]"),
    ("un, quatre-vingt-cinq, zéro cinq, soixante-dix-huit, zéro zéro six, zéro quatre-vingt-quatre, "
     f"clé {gen.below100(int(VALID_NIR[-2:]))}", "[NIR]"),
    ("numéro de sécurité sociale 1 85 05 78 006 084", "numéro de sécurité sociale [NIR]"),  # 13 digits + cue
    # phone
    ("Rappelez-moi au 06 12 34 56 78.", "Rappelez-moi au [TEL]."),
    ("0612345678 ou 06.12.34.56.78 ou 06-12-34-56-78", "[TEL] ou [TEL] ou [TEL]"),
    ("+33 6 12 34 56 78, +33612345678, +33 (0)6 12 34 56 78, 0033 6 12 34 56 78",
     "[TEL], [TEL], [TEL], [TEL]"),
    ("c'est un zéro six, douze, trente-quatre, cinquante-six, soixante-dix-huit", "c'est un [TEL]"),
    ("zéro six douze trente-quatre cinquante-six soixante-dix-huit", "[TEL]"),
    ("zero six douze trente quatre cinquante six soixante dix huit", "[TEL]"),
    ("zéro six un deux trois quatre cinq six sept huit", "[TEL]"),
    ("plus trente-trois, six, douze, trente-quatre, cinquante-six, soixante-dix-huit", "[TEL]"),
    ("numéro vert 0 800 123 456", "numéro vert [TEL]"),
    ("Le 06 12 34 56 78 ou le 07 98 76 54 32", "Le [TEL] ou le [TEL]"),
    ("De: 33612345678", "De: [TEL]"),
    # e-mail
    ("écrivez à jean.dupont@gmail.com merci", "écrivez à [EMAIL] merci"),
    ("JEAN.DUPONT+promo@MAIL.EXAMPLE.FR", "[EMAIL]"),
    ("c'est jean point dupont arobase gmail point com", "c'est [EMAIL]"),
    ("marie tiret claire point martin quatre-vingt-cinq arobase orange point fr", "[EMAIL]"),
    ("chloe tiret bas michel at example point org", "[EMAIL]"),
    ("jean.dupont @ gmail.com", "[EMAIL]"),
    ("luc point petit arobase free", "[EMAIL]"),  # a provider without its TLD
    # date of birth
    ("Je suis né le 12 mars 1985 à Lyon.", "Je suis né le [DATE_NAISSANCE] à Lyon."),
    ("née le 04/07/1978", "née le [DATE_NAISSANCE]"),
    ("Date de naissance : 12-03-1985", "Date de naissance : [DATE_NAISSANCE]"),
    ("Votre date de naissance ?\nspeaker_1: Le douze mars mille neuf cent quatre-vingt-cinq.",
     "Votre date de naissance ?\nspeaker_1: Le [DATE_NAISSANCE]."),
    ("né le quatorze juillet dix-neuf cent quatre-vingt-onze", "né le [DATE_NAISSANCE]"),
    ("née le 1er janvier 60", "née le [DATE_NAISSANCE]"),
    ("Le 12 mars 1985, c'est ma date de naissance.", "Le [DATE_NAISSANCE], c'est ma date de naissance."),
    ("mon anniversaire c'est le 2 avril", "mon anniversaire c'est le [DATE_NAISSANCE]"),
    ("Moi je suis du 12 mars 1985.", "Moi je suis du [DATE_NAISSANCE]."),
    ("née en mars 1985", "née en [DATE_NAISSANCE]"),
    ("né le 12 mars 1985, rendez-vous le 3 avril 2025", "né le [DATE_NAISSANCE], rendez-vous le 3 avril 2025"),
]


@pytest.mark.parametrize(("text", "expected"), POSITIVE)
def test_examples_are_redacted(text, expected):
    assert redact(text).text == expected


NEAR_MISSES = [
    "Votre numéro de commande est le 4578 1236 9874.",
    "La référence du dossier c'est CMD-2024-118734.",
    "La cotisation est de cent vingt-neuf euros par mois, soit 129,90 € avec les frais.",
    "Sur l'année ça fait 1 558 euros, le plafond est de quatre cent mille euros.",
    "On se rappelle le 12 mars 2025 à 14h30, la date d'effet est le 1er avril 2025.",
    "Je vous rappelle le 05/06/2025 à 9 h 15.",
    "J'habite au 12 rue Victor Hugo, 75011 Paris.",
    "Le numéro que j'ai noté c'est 06 12 34 56, il en manque.",
    "Le numéro 00 12 34 56 78 n'est pas français.",
    "Le numéro 4970 1012 3456 7897, ah non, je me suis trompé.",  # Luhn fails
    "Il y a une erreur dans l'IBAN FR76 3000 6000 0112 3456 7890 188.",  # mod-97 fails
    "IBAN FR 76 30 00 60 00 01 12 34 56 78 90 18 8",
    "J'ai noté 1 85 05 78 006 084 37.",  # NIR key fails
    "Le colis porte le code 1 85 05 78 006 084.",  # 13 digits without a social-security cue
    "Notre SIRET est le 732 829 320 00074, SIREN 732 829 320.",
    "Le SIRET du cabinet : 73282932000074.",
    "Nous sommes immatriculés à l'ORIAS sous le numéro 21 004 512.",
    "Votre numéro client c'est le 7812 3456 7812 3456.",  # no card issuer starts with 78
    "J'ai changé de mutuelle en 2019, je suis né en 1985.",
    "Le remboursement est de 12,5 % puis 80 %, soixante-dix pour cent.",
    "J'ai 45 ans et trois enfants de 4, 7 et 12 ans.",
    "La garantie naissance démarre le 1er mars 2025.",
    "Pour la date de naissance on verra plus tard, le rendez-vous est le 5 avril 2025.",
    "Tout est sur www.azur-sante.fr ou azur santé point fr.",
    "Le BIC c'est BNPAFRPP.",
    "Appelez le 3949 ou le 36 55.",
    "Le prélèvement aura lieu le 15 de chaque mois, contrat signé le 27/07/2021.",
    "Je ne le sais pas, le 12 mars peut-être.",
    "Le devis est du 12 mars 2025 et je suis du 3 au 10 avril en congés.",
    "speaker_1: 2 adultes\nspeaker_12: 3 enfants",
]


@pytest.mark.parametrize("text", NEAR_MISSES)
def test_near_misses_are_kept(text):
    result = redact(text)
    assert result.text == text, [(f.kind, text[f.start : f.end]) for f in result.findings]


def test_findings_carry_kind_and_offsets_only():
    text = "IBAN FR76 3000 6000 0112 3456 7890 189 et mail jean.dupont@gmail.com"
    result = redact(text)
    assert [f.kind for f in result.findings] == ["IBAN", "EMAIL"]
    iban = result.findings[0]
    assert text[iban.start : iban.end] == "FR76 3000 6000 0112 3456 7890 189"
    assert iban.original_len == iban.end - iban.start
    shown = repr(result.findings) + str(result.findings) + repr(iban)
    assert "3000" not in shown and "dupont" not in shown
    assert set(Finding.__dataclass_fields__) == {"kind", "start", "end", "original_len"}


def test_placeholders_have_no_digits_and_are_kept():
    assert set(PLACEHOLDERS) == set(KINDS)
    assert not any(ch.isdigit() for p in PLACEHOLDERS.values() for ch in p)
    already = "speaker_1: [IBAN], [TEL] et [EMAIL], née le [DATE_NAISSANCE], [NIR] [CARTE]"
    assert redact(already).text == already
    assert redact(already).findings == []


def test_empty_and_odd_inputs():
    assert redact("").text == "" and redact("").findings == []
    assert redact(None).text == ""  # type: ignore[arg-type]
    assert redact("١٢٣٤٥٦٧٨٩٠").text == "١٢٣٤٥٦٧٨٩٠"  # non-ASCII digits are not read as numbers


# --------------------------------------------------------------------------- properties

FILLER = [
    "bonjour", "oui", "alors", "je", "vous", "le", "la", "votre", "mon", "compte", "donc", "merci", "voilà",
    "parfait", "madame", "monsieur", "c'est", "bien", "noté", "attendez", "je", "regarde", "un", "une",
    "instant", "d'accord", "très", "pour", "contrat", "mutuelle", "santé", "conseiller", "numéro",
]
SEPARATORS = [" ", ", ", " : ", ". ", " — ", "\n"]

ARTICLES = {"un", "une"}
# French never says two articles in a row ("un un"): such filler would read as spoken digits.
filler = st.lists(st.sampled_from(FILLER), min_size=0, max_size=8).filter(
    lambda ws: not any(a in ARTICLES and b in ARTICLES for a, b in zip(ws, ws[1:], strict=False))
).map(" ".join)


@st.composite
def valid_iban(draw):
    cc = draw(st.sampled_from(["FR", "FR", "DE", "ES", "BE", "PT", "AT", "GB", "NL", "IT", "MC", "LU"]))
    length = {"FR": 27, "MC": 27, "DE": 22, "ES": 24, "BE": 16, "PT": 25, "AT": 20, "GB": 22, "NL": 18, "IT": 27, "LU": 20}[cc]
    letters = {"GB": 4, "NL": 4, "IT": 1}.get(cc, 0)
    head = draw(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=letters, max_size=letters))
    tail = draw(st.text(alphabet="0123456789", min_size=length - 4 - letters, max_size=length - 4 - letters))
    iban = gen.iban_from_bban(cc, head + tail)
    form = draw(st.sampled_from(["grouped", "compact"]))
    return iban, (" ".join(gen.chunks(iban, 4)) if form == "grouped" else iban)


@st.composite
def valid_card(draw):
    prefix, length = draw(st.sampled_from([("4970", 16), ("4", 16), ("4", 13), ("51", 16), ("55", 16), ("2221", 16), ("34", 15), ("37", 15), ("6011", 16), ("62", 19)]))
    body = prefix + draw(st.text(alphabet="0123456789", min_size=length - len(prefix) - 1, max_size=length - len(prefix) - 1))
    card = body + gen.luhn_digit(body)
    form = draw(st.sampled_from(["grouped", "compact", "dashes"]))
    sizes = [4, 6, 5] if length == 15 else [4, 4, 4, 4, 4]
    return card, {"grouped": " ".join(gen.group(card, sizes)), "compact": card, "dashes": "-".join(gen.group(card, sizes))}[form]


@st.composite
def valid_nir(draw):
    rng = random.Random(draw(st.integers(0, 2**32)))
    nir = gen.nir_number(rng, corsica=draw(st.booleans()))
    form = draw(st.sampled_from(["spaced", "compact", "key"]))
    return nir, gen.fmt_nir(rng, nir, form)


@st.composite
def valid_phone(draw):
    rng = random.Random(draw(st.integers(0, 2**32)))
    phone = gen.phone_number(rng)
    form = draw(st.sampled_from(["pairs", "compact", "dots", "dashes", "intl", "intl_compact", "intl_trunk", "0033", "spoken_pairs", "spoken_digits", "spoken_plus"]))
    return phone, gen.fmt_phone(rng, phone, form)


def embed(left: str, sep1: str, value: str, sep2: str, right: str) -> tuple[str, int, int]:
    text = f"{left}{sep1}{value}{sep2}{right}"
    start = len(left) + len(sep1)
    return text, start, start + len(value)


def assert_redacted_alone(text: str, start: int, end: int, kind: str) -> None:
    result = redact(text)
    assert [(f.kind, f.start, f.end) for f in result.findings] == [(kind, start, end)], result.findings
    assert result.text == text[:start] + PLACEHOLDERS[kind] + text[end:]
    # Filler has no digits: nothing of the value survives.
    assert not any(ch.isdigit() for ch in result.text)


@settings(max_examples=150, deadline=None)
@given(filler, st.sampled_from(SEPARATORS), valid_iban(), st.sampled_from(SEPARATORS), filler)
def test_valid_ibans_in_filler_are_redacted(left, sep1, iban, sep2, right):
    text, start, end = embed(left, sep1, iban[1], sep2, right)
    assert_redacted_alone(text, start, end, "IBAN")


@settings(max_examples=150, deadline=None)
@given(filler, st.sampled_from(SEPARATORS), valid_card(), st.sampled_from(SEPARATORS), filler)
def test_valid_cards_in_filler_are_redacted(left, sep1, card, sep2, right):
    text, start, end = embed(left, sep1, card[1], sep2, right)
    assert_redacted_alone(text, start, end, "CARTE")


@settings(max_examples=150, deadline=None)
@given(filler, st.sampled_from(SEPARATORS), valid_nir(), st.sampled_from(SEPARATORS), filler)
def test_valid_nirs_in_filler_are_redacted(left, sep1, nir, sep2, right):
    text, start, end = embed(left, sep1, nir[1], sep2, right)
    assert_redacted_alone(text, start, end, "NIR")


@settings(max_examples=150, deadline=None)
@given(filler, st.sampled_from(SEPARATORS), valid_phone(), st.sampled_from(SEPARATORS), filler)
def test_valid_phones_in_filler_are_redacted(left, sep1, phone, sep2, right):
    text, start, end = embed(left, sep1, phone[1], sep2, right)
    result = redact(text)
    assert [(f.kind, f.start, f.end) for f in result.findings] == [("TEL", start, end)], result.findings


def _break_digit(s: str, pos: int, delta: int) -> str:
    return s[:pos] + str((int(s[pos]) + delta) % 10) + s[pos + 1 :]


@settings(max_examples=150, deadline=None)
@given(filler, st.sampled_from(SEPARATORS), valid_card(), st.sampled_from(SEPARATORS), filler, st.integers(1, 9))
def test_luhn_failing_cards_are_kept(left, sep1, card, sep2, right, delta):
    number, shown = card
    bad = _break_digit(number, len(number) - 1, delta)
    assert not luhn_is_valid(bad)
    shown_bad = shown[:-1] + bad[-1]
    text, _, _ = embed(left, sep1, shown_bad, sep2, right)
    assert redact(text).text == text


@settings(max_examples=150, deadline=None)
@given(filler, st.sampled_from(SEPARATORS), valid_iban(), st.sampled_from(SEPARATORS), filler, st.data())
def test_mod97_failing_ibans_are_kept(left, sep1, iban, sep2, right, data):
    number, shown = iban
    digit_positions = [i for i, ch in enumerate(number) if ch.isdigit() and i >= 4]
    pos = data.draw(st.sampled_from(digit_positions))
    bad = _break_digit(number, pos, data.draw(st.integers(1, 9)))
    assert not iban_is_valid(bad)
    shown_bad = " ".join(gen.chunks(bad, 4)) if " " in shown else bad
    text, _, _ = embed(left, sep1, shown_bad, sep2, right)
    assert redact(text).text == text


@settings(max_examples=150, deadline=None)
@given(filler, st.sampled_from(SEPARATORS), valid_nir(), st.sampled_from(SEPARATORS), filler, st.integers(1, 96))
def test_wrong_key_nirs_are_kept(left, sep1, nir, sep2, right, delta):
    number, _ = nir
    bad = number[:13] + f"{(int(number[13:]) - 1 + delta) % 97 + 1:02d}"
    assert not nir_is_valid(bad)
    text, _, _ = embed(left, sep1, " ".join(gen.group(bad, [1, 2, 2, 2, 3, 3, 2])), sep2, right)
    assert redact(text).text == text


MIXED_TOKENS = [
    *FILLER, "06", "12", "34", "56", "78", "4970", "1012", "3456", "7893", "FR76", "FR", "F", "R", "2A", "1er",
    "zéro", "six", "douze", "trente-quatre", "soixante-dix-huit", "quatre", "vingt", "cent", "mille", "et",
    "plus", "trente-trois", "+33", "(0)", "arobase", "point", "com", "gmail", "jean", "tiret", "bas", "@",
    "né", "née", "le", "date", "de", "naissance", "mars", "1985", "12/03/1985", "rendez-vous", "clé", "sécu",
    "[TEL]", "[IBAN]", "[DATE_NAISSANCE]", "[EMAIL]", "[CARTE]", "[NIR]", "129,90", "€", "%", "2025",
]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(MIXED_TOKENS), st.sampled_from(SEPARATORS)), max_size=40))
def test_redaction_is_idempotent_on_mixed_text(parts):
    text = "".join(tok + sep for tok, sep in parts)
    once = redact(text).text
    assert redact(once).text == once


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_redaction_is_idempotent_and_total_on_any_text(text):
    once = redact(text)
    assert redact(once.text).text == once.text
    for f in once.findings:
        assert 0 <= f.start < f.end <= len(text) and f.kind in KINDS


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(valid_iban(), valid_card(), valid_nir(), valid_phone()), min_size=1, max_size=4), filler)
def test_no_digit_of_a_redacted_value_remains(values, glue):
    text = f" {glue}, ".join(shown for _, shown in values)
    result = redact(text)
    assert len(result.findings) == len(values)
    assert not any(ch.isdigit() for ch in result.text)
    assert redact(result.text).text == result.text


# --------------------------------------------------------------------------- labelled dataset


def _rows() -> list[dict]:
    return [json.loads(line) for line in DATASET.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_dataset_is_what_the_generator_writes():
    rows = gen.build(random.Random(gen.SEED))
    assert rows == _rows(), "tests/data/pii_utterances.jsonl is stale: run python tests/data/make_pii_utterances.py"


def test_dataset_shape():
    rows = _rows()
    assert len(rows) >= 200
    with_pii = sum(1 for r in rows if r["pii"])
    assert 0.4 <= with_pii / len(rows) <= 0.65
    kinds = {p["kind"] for r in rows for p in r["pii"]}
    assert kinds == set(KINDS)
    assert sum(len(r["near_misses"]) for r in rows) >= 150
    for r in rows:
        for item in r["pii"] + r["near_misses"]:
            assert item["value"] in r["text"]


def _span(text: str, value: str) -> tuple[int, int]:
    start = text.index(value)
    return start, start + len(value)


def test_dataset_recall_and_false_positives():
    """Recall and false-positive rates on ``tests/data/pii_utterances.jsonl`` (printed with ``-s``).

    * **Recall** = detected PII values / labelled PII values. A labelled value (its first occurrence
      in the text) is *detected* when one finding of the **same kind** covers its whole span
      (finding.start ≤ value start and finding.end ≥ value end); a partial cover or another kind is
      a miss. Must be ≥ 99 %, overall (per kind is printed too).
    * **Spurious finding**: a finding that overlaps no labelled PII value.
    * **Utterance FP rate** = utterances with at least one spurious finding / all utterances. Also
      printed for the utterances without any PII. Must be ≤ 1 %.
    * **Near-miss FP rate** = labelled near misses (order numbers, prices, appointment dates, postal
      codes, Luhn/mod-97/key failures, SIRET…) overlapped by any finding / all near misses. ≤ 1 %.
    * **Token FP rate** = whitespace-separated tokens lying outside every labelled PII value that
      overlap a finding / all such tokens. ≤ 1 %.
    """
    rows = _rows()
    found = total = 0
    per_kind: dict[str, list[int]] = {k: [0, 0] for k in KINDS}
    utt_fp = clean_utts = clean_fp = 0
    nm_hit = nm_total = 0
    tok_fp = tok_total = 0
    misses: list[str] = []
    for row in rows:
        text = row["text"]
        findings = redact(text).findings
        spans = []
        for item in row["pii"]:
            s, e = _span(text, item["value"])
            spans.append((s, e))
            ok = any(f.kind == item["kind"] and f.start <= s and f.end >= e for f in findings)
            total += 1
            found += ok
            per_kind[item["kind"]][0] += ok
            per_kind[item["kind"]][1] += 1
            if not ok:
                misses.append(f"{item['kind']}: {text!r}")
        spurious = [f for f in findings if not any(f.start < e and s < f.end for s, e in spans)]
        utt_fp += bool(spurious)
        if not row["pii"]:
            clean_utts += 1
            clean_fp += bool(spurious)
        for item in row["near_misses"]:
            s, e = _span(text, item["value"])
            nm_total += 1
            nm_hit += any(f.start < e and s < f.end for f in findings)
        for m in re.finditer(r"\S+", text):
            if any(m.start() < e and s < m.end() for s, e in spans):
                continue
            tok_total += 1
            tok_fp += any(m.start() < f.end and f.start < m.end() for f in findings)

    recall = found / total
    utt_rate, nm_rate, tok_rate = utt_fp / len(rows), nm_hit / nm_total, tok_fp / tok_total
    print(f"\n[pii dataset] {len(rows)} utterances, {total} PII values, {nm_total} near misses, {tok_total} non-PII tokens")
    print(f"[pii dataset] recall {found}/{total} = {recall:.2%}  per kind: "
          + ", ".join(f"{k} {a}/{b}" for k, (a, b) in per_kind.items()))
    print(f"[pii dataset] utterances with a spurious finding {utt_fp}/{len(rows)} = {utt_rate:.2%} "
          f"(PII-free utterances: {clean_fp}/{clean_utts})")
    print(f"[pii dataset] near misses redacted {nm_hit}/{nm_total} = {nm_rate:.2%}; "
          f"non-PII tokens redacted {tok_fp}/{tok_total} = {tok_rate:.2%}")
    for m in misses:
        print(f"[pii dataset] MISS {m}")
    assert recall >= 0.99, misses
    assert utt_rate <= 0.01 and nm_rate <= 0.01 and tok_rate <= 0.01


# --------------------------------------------------------------------------- timeline helpers


def _timeline() -> list[dict]:
    return build_timeline([
        {
            "has_transcription": True, "recording_url": "https://rec.example/a.mp3", "call_id": "c-1",
            "from_number": "+33612345678", "to_number": "01 84 60 20 20", "duration_seconds": 300,
            "chunks": [
                {"chunk_index": 0, "start_timestamp": 12.4, "end_timestamp": 40, "message_count": 2,
                 "speakers": ["speaker_0", "speaker_1"],
                 "full_text": "speaker_0: Pouvez-vous me donner votre IBAN ?\nspeaker_1: Oui, FR76 3000 6000 0112 3456 7890 189."},
                {"chunk_index": 1, "start_timestamp": 192.9, "end_timestamp": 230, "message_count": 3,
                 "speakers": ["speaker_0", "speaker_1"],
                 "full_text": "speaker_0: Je relis : FR76 3000 6000 0112 3456 7890 189, et votre date de naissance ?\n"
                              "speaker_1: Le 12 mars 1985, et mon mail jean point dupont arobase gmail point com.\n"
                              "speaker_0: Merci, la date d'effet est le 1er avril 2025."},
                {"chunk_index": 2, "start_timestamp": 250, "end_timestamp": 260, "message_count": 1,
                 "speakers": ["speaker_0"], "full_text": "speaker_0: Rien de personnel ici, 129,90 euros par mois."},
            ],
        },
        {
            "has_transcription": True, "recording_url": "https://rec.example/b.mp3", "call_id": "c-2",
            "from_number": "", "to_number": None,
            "chunks": [{"chunk_index": 0, "start_timestamp": 5, "end_timestamp": 9, "message_count": 1,
                        "speakers": ["speaker_1"], "full_text": "speaker_1: Mon portable, zéro six, douze, trente-quatre, cinquante-six, soixante-dix-huit."}],
        },
    ])


def test_redact_timeline_returns_a_redacted_copy():
    timeline = _timeline()
    before = copy.deepcopy(timeline)
    red = redact_timeline(timeline)
    assert timeline == before  # input untouched
    assert [c["chunk_index"] for c in red[0]["chunks"]] == [0, 1, 2]
    assert red[0]["from_number"] == "[TEL]" and red[0]["to_number"] == "[TEL]"
    assert red[1]["from_number"] == ""
    assert red[0]["chunks"][0]["full_text"] == "speaker_0: Pouvez-vous me donner votre IBAN ?\nspeaker_1: Oui, [IBAN]."
    assert red[0]["chunks"][1]["full_text"] == (
        "speaker_0: Je relis : [IBAN], et votre date de naissance ?\n"
        "speaker_1: Le [DATE_NAISSANCE], et mon mail [EMAIL].\n"
        "speaker_0: Merci, la date d'effet est le 1er avril 2025."
    )
    assert red[0]["chunks"][2] == timeline[0]["chunks"][2]
    assert red[1]["chunks"][0]["full_text"] == "speaker_1: Mon portable, [TEL]."
    shown = timeline_text(red)
    assert "3000" not in shown and "dupont" not in shown and "612345678" not in shown and "84 60" not in shown
    assert redact_timeline(red) == red


def test_spoken_facts_and_their_prompt_text():
    facts = spoken_facts(_timeline())
    assert facts == [
        SpokenFact("IBAN", "speaker_1", 0, 0, "00:12"),
        SpokenFact("IBAN", "speaker_0", 0, 1, "03:12"),
        SpokenFact("DATE_NAISSANCE", "speaker_1", 0, 1, "03:12"),
        SpokenFact("EMAIL", "speaker_1", 0, 1, "03:12"),
        SpokenFact("TEL", "speaker_1", 1, 0, "00:05"),
    ]
    text = facts_text(facts)
    assert "- 03:12 (enregistrement #1, chunk 2) : un IBAN (coordonnées bancaires) a été énoncé par speaker_0 — marqueur [IBAN]" in text
    assert "- 00:05 (enregistrement #2, chunk 1) : un numéro de téléphone a été énoncé par speaker_1 — marqueur [TEL]" in text
    assert "3000" not in text and "dupont" not in text and "1985" not in text
    assert "Aucune" in facts_text([])
    assert spoken_facts(redact_timeline(_timeline())) == []
    assert spoken_facts([]) == [] and spoken_facts([{"chunks": [{"full_text": "sans locuteur 06 12 34 56 78"}]}]) == [
        SpokenFact("TEL", "unknown", 0, 0, "00:00")
    ]
