"""Personal-data redaction for French sales-call transcripts (issue 11 §1, §2).

Why: transcripts hold bank details, social security numbers, card numbers, phone numbers, e-mail
addresses and dates of birth, and none of these is needed for a compliance verdict, so none of them
should reach an external LLM. Each detected value is replaced by a typed placeholder (``[IBAN]``,
``[CARTE]``, ``[NIR]``, ``[TEL]``, ``[EMAIL]``, ``[DATE_NAISSANCE]``); what was said (which kind, by
whom, when) survives as :class:`SpokenFact` records, because checklist items such as "bank details
must not be read back aloud" depend on it.

Pure and deterministic (stdlib only). The text is speech-to-text output, so numbers come written
(``06 12 34 56 78``), spoken (``zéro six, douze, trente-quatre…``) or mixed. Precision comes from
checksums and structure, not from guessing:

* **IBAN**: country code of the IBAN registry, exact national length, ISO 13616 mod-97 (the only
  letters accepted in spoken/spaced digit runs are the country code; letters inside the BBAN are
  accepted in written form). A French RIB read as its 23 digits (bank, branch, account, RIB key)
  counts as ``[IBAN]`` too when its key checks.
* **CARTE**: 13, 15–19 digits, a known issuer prefix for that length (Visa, Mastercard, Amex,
  Discover, JCB, UnionPay, Diners 16+, Maestro ranges) and the Luhn check. 14 digits are never a
  card: SIRET numbers are 14 Luhn-valid digits and 14-digit (old Diners) cards are obsolete.
* **NIR**: 15 characters, sex digit 1/2 (7/8: temporary NIA), plausible month, department (``2A``/``2B`` for
  Corsica, replaced by 19/18 for the key), key ``97 - (n mod 97)``. The 13 digits without their key
  are taken only after a cue ("sécurité sociale", "sécu", "NIR", "INSEE", "carte vitale").
* **TEL**: ``0`` + a non-zero digit + 8 digits, ``+33``/``plus trente-trois``/``0033`` + 9 digits
  (``(0)`` tolerated), or an 11-digit ``33…`` written as one token.
* **EMAIL**: written addresses, and spoken ones (``jean point dupont arobase gmail point com``); a
  spoken domain must end with a known top-level domain, or be a known mailbox provider.
* **DATE_NAISSANCE**: only a date that follows a birth cue ("né le", "née le", "date de naissance",
  "naissance", "anniversaire", "DDN"; "je suis du" only right before the date) within 60 characters with no appointment/contract word in
  between ("effet", "rendez-vous", "prélèvement"…), or a date directly followed by "(c'est) ma date
  de naissance". A year alone is never redacted.

How digit runs are read: the text becomes a stream of items (digit groups, spoken numbers composed
greedily — ``soixante-dix-huit`` → 78, ``trois mille six`` → 3006, ``zéro`` always its own group,
with the hyphen rule of :class:`_Spoken` — words, punctuation). Consecutive digit groups separated
only by spaces, ``.``, ``-``, ``,``, ``;``, ``:``, parentheses or the word "clé" form a *run*; any
other word or symbol ends it, and a group glued to ``/ % € $ _`` (``12/27``, ``80%``,
``speaker_1``) never joins one.
"un" next to written digits is the article (``c'est un 06…``), not a 1. A candidate is a range of
whole groups of a run that passes one of the checks above. A candidate that is only part of a run
is accepted only if, on each side, the rest of the run is cut off by a strong separator (comma,
semicolon, colon, ``.`` + space, newline), possibly after a lone spoken "un": this keeps a card
or phone number from being carved out of a longer number that failed its own check (an IBAN with a
wrong checksum, a misread card). A country code is never a negligible leftover, and a complete
written IBAN shape with a wrong checksum is kept whole (shielded) rather than mined for other
kinds. Among compatible candidates, the selection covering the most digits wins (exact dynamic
programming per run).

Limits (by design): a misheard IBAN/card/NIR whose checksum fails stays in clear; a RIB whose parts
are separated by labels ("code banque …, guichet …") is not joined; names and postal addresses
are not redacted (not in scope).

Invariants (property-tested): placeholders contain no digit; ``redact`` is idempotent; findings
carry only the kind and the offsets in the original text, never the value.
"""

from __future__ import annotations

import copy
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from auditflow_dagster.core.timeline import minutage

__all__ = [
    "KINDS",
    "PLACEHOLDERS",
    "Finding",
    "Redaction",
    "SpokenFact",
    "facts_text",
    "iban_is_valid",
    "luhn_is_valid",
    "nir_is_valid",
    "redact",
    "redact_timeline",
    "spoken_facts",
]

KINDS = ("IBAN", "CARTE", "NIR", "TEL", "EMAIL", "DATE_NAISSANCE")
PLACEHOLDERS = {kind: f"[{kind}]" for kind in KINDS}

#: Kinds found in digit runs; their placeholders take part in later runs as already-chosen
#: candidates (that is what keeps :func:`redact` idempotent).
_RUN_KINDS = frozenset({"IBAN", "CARTE", "NIR", "TEL"})
_PRIORITY = {"IBAN": 4, "NIR": 3, "CARTE": 2, "TEL": 1}

#: IBAN registry lengths for the SEPA area (and neighbours a French brokerage meets).
IBAN_LENGTHS = {
    "AD": 24, "AT": 20, "BE": 16, "BG": 22, "CH": 21, "CY": 28, "CZ": 24, "DE": 22, "DK": 18,
    "EE": 20, "ES": 24, "FI": 18, "FR": 27, "GB": 22, "GI": 23, "GR": 27, "HR": 21, "HU": 28,
    "IE": 22, "IS": 26, "IT": 27, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MT": 31,
    "NL": 18, "NO": 15, "PL": 28, "PT": 25, "RO": 24, "SE": 24, "SI": 19, "SK": 24, "SM": 27,
    "VA": 22,
}

DOB_WINDOW = 60
"""Characters allowed between a birth cue and the start of its date."""



# --------------------------------------------------------------------------------------------- #
# Public records
# --------------------------------------------------------------------------------------------- #


@dataclass(frozen=True)
class Finding:
    """One redacted span: its kind and its offsets in the *original* text (never the value)."""

    kind: str
    start: int
    end: int
    original_len: int


@dataclass(frozen=True)
class Redaction:
    """Redacted text and what was replaced, in text order."""

    text: str
    findings: list[Finding] = field(default_factory=list)


@dataclass(frozen=True)
class SpokenFact:
    """A kind of personal data said by ``speaker`` in a chunk (``minutage`` = chunk start, MM:SS)."""

    kind: str
    speaker: str
    recording_index: int
    chunk_index: int
    minutage: str


# --------------------------------------------------------------------------------------------- #
# Checksums
# --------------------------------------------------------------------------------------------- #


def luhn_is_valid(digits: str) -> bool:
    """Luhn (mod 10) check over a digit string."""
    if not digits.isdigit() or not digits.isascii():
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def iban_is_valid(iban: str) -> bool:
    """ISO 13616: registry country and length, then ``int(BBAN + CC + check, letters A=10…) % 97 == 1``."""
    s = re.sub(r"[\s\-]", "", iban).upper()
    if len(s) < 5 or not s.isascii() or not s.isalnum():
        return False
    if IBAN_LENGTHS.get(s[:2]) != len(s) or not s[2:4].isdigit():
        return False
    rearranged = s[4:] + s[:4]
    number = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(number) % 97 == 1


def _card_prefix_ok(d: str) -> bool:
    n = len(d)
    p2, p3, p4 = int(d[:2]), int(d[:3]), int(d[:4])
    if d[0] == "4":
        return n in (13, 16, 19)
    if 51 <= p2 <= 55 or 2221 <= p4 <= 2720:
        return n == 16
    if p2 in (34, 37):
        return n == 15
    if p4 in (5018, 5020, 5038, 5893, 6304, 6759, 6761, 6762, 6763):  # Maestro
        return n in (13, 15, 16, 17, 18, 19)
    if p4 == 6011 or 644 <= p3 <= 649 or p2 == 65 or p2 == 62 or 3528 <= p4 <= 3589 or p2 == 36:
        return 16 <= n <= 19
    return False


def _card_is_valid(d: str) -> bool:
    return d.isdigit() and len(d) in (13, 15, 16, 17, 18, 19) and _card_prefix_ok(d) and luhn_is_valid(d)


def _nir_structure_ok(s: str) -> bool:
    """First 13 characters of a NIR: sex, year, month, department (``2A``/``2B``), commune, order."""
    if len(s) < 13 or s[0] not in "1278" or not s[1:5].isdigit():
        return False
    month = int(s[3:5])
    if not (1 <= month <= 12 or 20 <= month <= 42 or 50 <= month <= 99):
        return False
    dept = s[5:7]
    if dept in ("2A", "2B"):
        return s[7:13].isdigit()
    return dept.isdigit() and dept != "00" and s[7:13].isdigit()


def nir_is_valid(nir: str) -> bool:
    """French NIR: structure of the 13 first characters and key ``97 - (n mod 97)``.

    For Corsica the department ``2A`` (``2B``) is replaced by ``19`` (``18``) to compute ``n``.
    """
    s = re.sub(r"\s", "", nir).upper()
    if len(s) != 15 or not _nir_structure_ok(s) or not s[13:].isdigit():
        return False
    body = s[:13].replace("2A", "19", 1) if s[5:7] == "2A" else s[:13].replace("2B", "18", 1) if s[5:7] == "2B" else s[:13]
    return int(s[13:]) == 97 - int(body) % 97


def _rib_is_valid(d: str) -> bool:
    """A French RIB as 23 digits: bank(5) branch(5) account(11) key(2), key = 97 - (89b+15g+3c) % 97."""
    if len(d) != 23 or not d.isdigit():
        return False
    bank, branch, account, key = int(d[:5]), int(d[5:10]), int(d[10:21]), int(d[21:])
    return key == 97 - (89 * bank + 15 * branch + 3 * account) % 97


def _phone_is_valid(d: str, plus: bool, single_token: bool) -> bool:
    if not d.isdigit():
        return False
    if len(d) == 10 and d[0] == "0" and d[1] != "0":
        return True
    if plus and d.startswith("33"):
        rest = d[2:]
        if len(rest) == 10 and rest[0] == "0":
            rest = rest[1:]
        return len(rest) == 9 and rest[0] != "0"
    if d.startswith("0033"):
        rest = d[4:]
        if len(rest) == 10 and rest[0] == "0":
            rest = rest[1:]
        return len(rest) == 9 and rest[0] != "0"
    return single_token and len(d) == 11 and d.startswith("33") and d[2] != "0"


# --------------------------------------------------------------------------------------------- #
# Items: the text as digit groups (written or spoken), words and symbols
# --------------------------------------------------------------------------------------------- #


def _fold(s: str) -> str:
    """Lowercase, accents removed, typographic apostrophe folded."""
    s = unicodedata.normalize("NFD", s.replace("\u2019", "'"))
    return "".join(c for c in s if not unicodedata.combining(c)).lower()


_UNITS = {"un": 1, "une": 1, "deux": 2, "trois": 3, "quatre": 4, "cinq": 5, "six": 6, "sept": 7, "huit": 8, "neuf": 9}
_TEENS = {"onze": 11, "douze": 12, "treize": 13, "quatorze": 14, "quinze": 15, "seize": 16}
_TENS = {
    "vingt": 20, "trente": 30, "quarante": 40, "cinquante": 50, "soixante": 60,
    "septante": 70, "huitante": 80, "octante": 80, "nonante": 90,
}
_NUMBER_WORDS = frozenset({*_UNITS, *_TEENS, *_TENS, "zero", "dix", "vingts", "cent", "cents", "mille", "et"})

_PH_RE = "|".join(KINDS)
_RAW = re.compile(
    rf"(?P<ph>\[(?:{_PH_RE})\])"
    r"|(?P<dec>[0-9]+,[0-9]+)"
    r"|(?P<alpha>[^\W\d_]+(?:['\u2019\-][^\W\d_]+)*)"
    r"|(?P<digit>[0-9]+)"
    r"|(?P<ws>\s+)"
    r"|(?P<punct>.)",
    re.S,
)
_NIR_CORSICA_WRITTEN = re.compile(r"[1278][0-9]{4}2[ABab][0-9]{6}(?:[0-9]{2})?")
_ORDINAL_SUFFIXES = frozenset({"er", "re", "e", "eme", "ere"})


@dataclass(slots=True)
class _Item:
    kind: str  # num word punct ws ph cc corsica ord mixed dec claimed
    start: int
    end: int
    text: str
    norm: str = ""
    digits: str = ""  # num: digits; corsica: "2A"/"2B" or a written NIR with it; cc: country code; ph: kind
    plus: bool = False
    spoken: bool = False
    single: bool = False  # num written as one token of digits


def _raw_tokens(text: str) -> list[tuple[str, int, int]]:
    return [(m.lastgroup or "punct", m.start(), m.end()) for m in _RAW.finditer(text)]


def _classify_compound(text: str, parts: list[tuple[str, int, int]]) -> list[_Item]:
    """Adjacent letters/digits with no separator (``FR76``, ``2A``, ``1er``, ``14h30``, ``dupont42``)."""
    if len(parts) == 1:
        kind, s, e = parts[0]
        t = text[s:e]
        if kind == "digit":
            return [_Item("num", s, e, t, digits=t, single=True)]
        return [_Item("word", s, e, t, norm=_fold(t))]
    whole = text[parts[0][1] : parts[-1][2]]
    if _NIR_CORSICA_WRITTEN.fullmatch(whole):
        return [_Item("corsica", parts[0][1], parts[-1][2], whole, digits=whole.upper())]
    kinds = [p[0] for p in parts]
    first, second = text[parts[0][1] : parts[0][2]], text[parts[1][1] : parts[1][2]]
    if kinds == ["alpha", "digit"] and len(first) == 2 and first.upper() in IBAN_LENGTHS and (first.isupper() or first.islower()):
        (_, s0, e0), (_, s1, e1) = parts
        return [_Item("cc", s0, e0, first, digits=first.upper()), _Item("num", s1, e1, second, digits=second, single=True)]
    if kinds == ["digit", "alpha"] and first == "2" and second.upper() in ("A", "B"):
        return [_Item("corsica", parts[0][1], parts[1][2], first + second, digits="2" + second.upper())]
    if kinds == ["digit", "alpha"] and _fold(second) in _ORDINAL_SUFFIXES and 1 <= int(first) <= 31:
        return [_Item("ord", parts[0][1], parts[1][2], first + second, digits=first)]
    return [_Item("mixed", parts[0][1], parts[-1][2], text[parts[0][1] : parts[-1][2]])]


class _Spoken:
    """Greedy French cardinal parser over number-word components (``soixante-dix-huit`` → 78).

    Spelling decides how far a compound below 100 reaches: when the words of a sequence carry
    hyphens (``soixante-dix-huit``), a space separates numbers (``soixante dix-huit`` is 60, 18;
    ``zéro quatre vingt`` is 0, 4, 20), as in written French; when none does (speech-to-text
    without hyphens, ``soixante dix huit``), compounds run across spaces. Hundreds, thousands and
    ``et un`` always compose across spaces (``mille neuf cent quatre-vingt-cinq``, ``vingt et un``).
    """

    def __init__(self, names: list[str], tokens: list[int]) -> None:
        self.c = names
        self.tok = tokens
        self.hyphen_mode = len(set(tokens)) < len(tokens)

    def _at(self, j: int) -> str:
        return self.c[j] if 0 <= j < len(self.c) else ""

    def _ext(self, j: int) -> str:
        """Component ``j`` if it may extend a compound ending at ``j - 1``, else ``""``."""
        if j >= len(self.c) or (self.hyphen_mode and self.tok[j] != self.tok[j - 1]):
            return ""
        return self.c[j]

    def below100(self, i: int) -> tuple[int, int] | None:
        w = self.c[i]
        if w in _UNITS:
            if w == "quatre" and self._ext(i + 1) in ("vingt", "vingts"):
                sub = self.teen_or_unit(i + 2, joined=True)
                return (80 + sub[0], sub[1]) if sub else (80, i + 2)
            return _UNITS[w], i + 1
        if w == "dix" or w in _TEENS:
            return self.teen_or_unit(i, joined=False)
        if w in _TENS or w == "vingts":
            v, j = _TENS.get(w, 20), i + 1
            if self._at(j) == "et" and self._at(j + 1) in ("un", "une"):
                return v + 1, j + 2
            if v == 60 and self._at(j) == "et" and self._at(j + 1) == "onze":
                return 71, j + 2
            nxt = self._ext(j)
            if v == 60 and (nxt == "dix" or nxt in _TEENS):
                sub = self.teen_or_unit(j, joined=True)
                if sub:
                    return v + sub[0], sub[1]
            if nxt in _UNITS and nxt not in ("un", "une"):  # 21…61 take "et": "soixante un" is 60, 1
                return v + _UNITS[nxt], j + 1
            return v, j
        return None

    def teen_or_unit(self, i: int, joined: bool) -> tuple[int, int] | None:
        """10–19 or 1–9 at ``i``; ``joined``: ``i`` continues a compound (spelling rule applies)."""
        w = self._ext(i) if joined and i > 0 else self._at(i)
        if w == "dix":
            if self._ext(i + 1) in ("sept", "huit", "neuf"):
                return 10 + _UNITS[self.c[i + 1]], i + 2
            return 10, i + 1
        if w in _TEENS:
            return _TEENS[w], i + 1
        if w in _UNITS:
            return _UNITS[w], i + 1
        return None

    def below1000(self, i: int) -> tuple[int, int] | None:
        w = self.c[i]
        if w in _UNITS and w not in ("un", "une") and self._at(i + 1) in ("cent", "cents"):
            v, j = _UNITS[w] * 100, i + 2
        elif w in ("cent", "cents"):
            v, j = 100, i + 1
        else:
            return self.below100(i)
        if j < len(self.c) and self.c[j] not in ("cent", "cents", "mille", "zero", "et"):
            sub = self.below100(j)
            if sub:
                return v + sub[0], sub[1]
        return v, j

    def number(self, i: int) -> tuple[int, int] | None:
        """A cardinal (0 < value < 1 000 000) starting at ``i``: (value, next index)."""
        if self.c[i] == "mille":
            v, j = 1000, i + 1
        else:
            head = self.below1000(i)
            if head is None:
                return None
            v, j = head
            if self._at(j) != "mille":
                return v, j
            v, j = v * 1000, j + 1
        if j < len(self.c) and self.c[j] not in ("mille", "zero", "et"):
            sub = self.below1000(j)
            if sub:
                return v + sub[0], sub[1]
        return v, j


def _is_number_word(norm: str) -> bool:
    parts = norm.split("-")
    return all(p in _NUMBER_WORDS for p in parts)


def _compose_numbers(words: list[_Item]) -> list[_Item]:
    """Spoken numbers: split hyphenated words into components and compose them greedily."""
    comps: list[tuple[str, int, int]] = []
    tokens: list[int] = []
    for t, w in enumerate(words):
        pos = w.start
        for part in w.text.split("-"):
            comps.append((_fold(part), pos, pos + len(part)))
            tokens.append(t)
            pos += len(part) + 1
    names = [c[0] for c in comps]
    parser = _Spoken(names, tokens)
    out: list[_Item] = []
    i = 0
    while i < len(comps):
        name, s, _ = comps[i]
        parsed = (0, i + 1) if name == "zero" else parser.number(i)
        if parsed is None:
            out.append(_Item("word", s, comps[i][2], name, norm=name))
            i += 1
            continue
        value, j = parsed
        e = comps[j - 1][2]
        out.append(_Item("num", s, e, "", digits=str(value), spoken=True))
        i = j
    return out


def _items(text: str, claimed: Sequence[tuple[int, int]] = ()) -> list[_Item]:
    raw = _raw_tokens(text)
    items: list[_Item] = []
    k = 0
    while k < len(raw):
        kind, s, e = raw[k]
        if kind in ("alpha", "digit"):
            parts = [raw[k]]
            while k + 1 < len(raw) and raw[k + 1][0] in ("alpha", "digit") and raw[k + 1][1] == parts[-1][2]:
                k += 1
                parts.append(raw[k])
            items.extend(_classify_compound(text, parts))
        elif kind == "ph":
            items.append(_Item("ph", s, e, text[s:e], digits=text[s + 1 : e - 1]))
        else:
            items.append(_Item(kind, s, e, text[s:e]))
        k += 1

    # Spoken numbers: maximal sequences of number words separated by whitespace only.
    composed: list[_Item] = []
    k = 0
    while k < len(items):
        it = items[k]
        if it.kind == "word" and _is_number_word(it.norm) and it.norm != "et":
            seq = [it]
            m = k + 1
            while m + 1 < len(items) and items[m].kind == "ws" and items[m + 1].kind == "word" and _is_number_word(items[m + 1].norm):
                seq.append(items[m + 1])
                m += 2
            # Rebuild, keeping the whitespace items between the composed numbers.
            nums = _compose_numbers(seq)
            prev_end = None
            for n_item in nums:
                if prev_end is not None and n_item.start > prev_end:
                    composed.append(_Item("ws", prev_end, n_item.start, text[prev_end : n_item.start]))
                n_item.text = text[n_item.start : n_item.end]
                composed.append(n_item)
                prev_end = n_item.end
            k = m
            continue
        composed.append(it)
        k += 1
    items = composed

    # "+33" / "plus trente-trois": an international prefix on the following group.
    out: list[_Item] = []
    k = 0
    while k < len(items):
        it = items[k]
        nxt = items[k + 1] if k + 1 < len(items) else None
        if it.kind == "punct" and it.text == "+" and nxt and nxt.kind == "num" and nxt.start == it.end and nxt.digits.startswith("33"):
            nxt.plus, nxt.start = True, it.start
            nxt.text = text[nxt.start : nxt.end]
            k += 1
            continue
        if it.kind == "word" and it.norm == "plus" and nxt and nxt.kind == "ws" and k + 2 < len(items):
            num = items[k + 2]
            if num.kind == "num" and num.digits == "33":
                num.plus, num.start = True, it.start
                num.text = text[num.start : num.end]
                k += 2
                continue
        # "deux A" / "2 B": a Corsican department read aloud inside a NIR.
        if (
            it.kind == "num" and it.digits == "2" and nxt and nxt.kind == "ws" and "\n" not in nxt.text
            and k + 2 < len(items) and items[k + 2].kind == "word" and items[k + 2].text in ("A", "B")
        ):
            letter = items[k + 2]
            out.append(_Item("corsica", it.start, letter.end, text[it.start : letter.end], digits="2" + letter.text))
            k += 3
            continue
        # "F R 76…": a spelled country code.
        if (
            it.kind == "word" and len(it.text) == 1 and it.text.isupper() and nxt and nxt.kind == "ws" and "\n" not in nxt.text
            and k + 2 < len(items) and items[k + 2].kind == "word" and len(items[k + 2].text) == 1
            and items[k + 2].text.isupper() and (it.text + items[k + 2].text) in IBAN_LENGTHS
        ):
            second = items[k + 2]
            out.append(_Item("cc", it.start, second.end, text[it.start : second.end], digits=it.text + second.text))
            k += 3
            continue
        if it.kind == "word" and len(it.text) == 2 and it.text.isupper() and it.text in IBAN_LENGTHS:
            it.kind, it.digits = "cc", it.text
        out.append(it)
        k += 1
    items = out

    # "un" said alone next to written digits is the article (``c'est un 06…``) unless a spoken digit
    # precedes it (``zéro un 23 45…``); "une" alone is never a digit. Articles end runs.
    nz = [i for i, it in enumerate(items) if it.kind != "ws" and not (it.kind == "punct" and it.text in _SEP_PUNCT)]
    for pos, idx in enumerate(nz):
        it = items[idx]
        if it.kind != "num" or not it.spoken or _fold(it.text) not in ("un", "une"):
            continue
        prev = items[nz[pos - 1]] if pos > 0 else None
        neighbours = [items[nz[p]] for p in (pos - 1, pos + 1) if 0 <= p < len(nz)]
        written_next_to_it = any(n.kind in ("num", "corsica") and not n.spoken for n in neighbours)
        after_spoken = prev is not None and prev.kind == "num" and prev.spoken  # "zéro un 23 45…"
        if _fold(it.text) == "une" or (written_next_to_it and not after_spoken):
            it.kind, it.norm, it.digits = "word", _fold(it.text), ""

    if claimed:
        for it in items:
            if it.kind != "ws" and any(it.start < ce and cs < it.end for cs, ce in claimed):
                it.kind = "claimed"
    return items


# --------------------------------------------------------------------------------------------- #
# Digit runs: IBAN (spoken / spaced), NIR, RIB, cards, phones
# --------------------------------------------------------------------------------------------- #

_SEP_PUNCT = frozenset(".-\u2013\u2014,;:()")
_STRONG_PUNCT = frozenset(",;:")
_KEY_WORDS = frozenset({"cle", "clef"})
_NIR_CUE = re.compile(r"s[ée]cu|s[ée]curit[ée]\s+sociale|\bNIR\b|\bINSEE\b|carte\s+vitale", re.I)


@dataclass(slots=True)
class _Run:
    elems: list[_Item]
    strong: list[bool]  # strong[k]: boundary between elems[k-1] and elems[k] (strong[0] unused)


_QUANTITY_PUNCT = frozenset("/%€$_")


def _glued_to_quantity(items: list[_Item], idx: int) -> bool:
    """A digit group touching ``/ % € $ _`` (``12/27``, ``05/2026``, ``80%``, ``129€``,
    ``speaker_1``) is a date, a ratio, an amount or a label, never part of a personal number; it
    ends runs instead of joining them."""
    it = items[idx]
    before = items[idx - 1] if idx > 0 else None
    after = items[idx + 1] if idx + 1 < len(items) else None
    return bool(
        (before and before.kind == "punct" and before.text in _QUANTITY_PUNCT and before.end == it.start)
        or (after and after.kind == "punct" and after.text in _QUANTITY_PUNCT and after.start == it.end)
    )


def _runs(items: list[_Item]) -> list[_Run]:
    runs: list[_Run] = []
    cur: _Run | None = None
    pending: list[_Item] = []

    def close() -> None:
        nonlocal cur
        if cur is not None:
            runs.append(cur)
        cur = None
        pending.clear()

    for idx, it in enumerate(items):
        is_elem = it.kind in ("num", "corsica", "cc") or (it.kind == "ph" and it.digits in _RUN_KINDS)
        if it.kind == "num" and not it.spoken and _glued_to_quantity(items, idx):
            is_elem = False
        if is_elem:
            if it.kind == "cc" or cur is None:
                close()
                cur = _Run([it], [False])
            else:
                strong = False
                for pi, p in enumerate(pending):
                    if p.kind == "punct" and p.text in _STRONG_PUNCT:
                        strong = True
                    elif p.kind == "ws" and "\n" in p.text:
                        strong = True
                    elif p.kind == "punct" and p.text == "." and pi + 1 < len(pending) and pending[pi + 1].kind == "ws":
                        strong = True
                cur.elems.append(it)
                cur.strong.append(strong)
            pending.clear()
        elif cur is not None and (
            it.kind == "ws" or (it.kind == "punct" and it.text in _SEP_PUNCT) or (it.kind == "word" and it.norm in _KEY_WORDS)
        ):
            pending.append(it)
        else:
            close()
    close()
    return runs


@dataclass(slots=True)
class _Cand:
    i: int
    j: int  # inclusive
    kind: str
    score: int


def _validate(run: _Run, i: int, j: int, text: str) -> str | None:
    elems = run.elems[i : j + 1]
    head = elems[0]
    if head.kind == "cc":
        body = "".join(e.digits for e in elems[1:])
        if elems[1:] and all(e.kind == "num" for e in elems[1:]) and len(body) == IBAN_LENGTHS[head.digits] - 2:
            return "IBAN" if iban_is_valid(head.digits + body) else None
        return None
    if any(e.kind not in ("num", "corsica") for e in elems):
        return None
    s = "".join(e.digits for e in elems)
    if len(s) == 15 and nir_is_valid(s):
        return "NIR"
    if len(s) == 13 and _nir_structure_ok(s) and _NIR_CUE.search(text[max(0, head.start - 80) : head.start]):
        return "NIR"
    if not s.isdigit():
        return None
    if _rib_is_valid(s):
        return "IBAN"
    if _card_is_valid(s):
        return "CARTE"
    if _phone_is_valid(s, head.plus, single_token=len(elems) == 1 and head.single):
        return "TEL"
    return None


def _candidates(run: _Run, text: str) -> list[_Cand]:
    out: list[_Cand] = []
    n = len(run.elems)
    for i in range(n):
        if run.elems[i].kind == "ph":
            out.append(_Cand(i, i, run.elems[i].digits, 10**9))  # already chosen: always kept
            continue
        length = 0
        for j in range(i, n):
            e = run.elems[j]
            if e.kind == "ph" or (e.kind == "cc" and j > i):
                break
            length += len(e.digits)
            if length > 34:
                break
            if j == i and e.kind == "cc":
                continue
            kind = _validate(run, i, j, text)
            if kind:
                out.append(_Cand(i, j, kind, length * 100 + _PRIORITY[kind]))
    return out


def _is_article(e: _Item) -> bool:
    return e.kind == "num" and e.spoken and _fold(e.text) in ("un", "une")


def _side_ok(run: _Run, start: int, stop: int, step: int) -> bool:
    """Walk from ``start`` towards ``stop`` (exclusive: the neighbouring chosen candidate or the run
    end) over unchosen elements: fine once a strong boundary is crossed; before that, the only
    element allowed is a lone article "un"/"une" (``c'est un zéro six…``)."""
    met = 0
    k = start
    while k != stop:
        boundary = k if step > 0 else k + 1  # boundary crossed to reach element k
        if 0 < boundary < len(run.elems) and run.strong[boundary]:
            return True
        met += 1
        if met > 1 or not _is_article(run.elems[k]):
            return False
        k += step
    return True


def _gap_ok(run: _Run, left: _Cand | None, right: _Cand | None) -> bool:
    lo = left.j + 1 if left else 0
    hi = right.i if right else len(run.elems)
    if lo >= hi:
        return True
    if left and not _side_ok(run, lo, hi, 1):
        return False
    if right and not _side_ok(run, hi - 1, lo - 1, -1):
        return False
    return True


def _select(run: _Run, cands: list[_Cand]) -> list[_Cand]:
    """Best-scoring set of non-overlapping candidates whose gaps pass :func:`_gap_ok` (exact DP)."""
    if not cands:
        return []
    cands = sorted(cands, key=lambda c: (c.j, c.i))
    best: list[tuple[int, list[_Cand]] | None] = []
    for c in cands:
        options: list[tuple[int, list[_Cand]]] = []
        if _gap_ok(run, None, c):
            options.append((c.score, [c]))
        for p, prev in zip(cands, best, strict=False):
            if prev is not None and p.j < c.i and _gap_ok(run, p, c):
                options.append((prev[0] + c.score, [*prev[1], c]))
        best.append(max(options, key=lambda o: o[0]) if options else None)
    finals = [b for c, b in zip(cands, best, strict=True) if b is not None and _gap_ok(run, c, None)]
    if not finals:
        return []
    return max(finals, key=lambda b: b[0])[1]


def _run_spans(text: str, claimed: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    items = _items(text, [(s, e) for s, e, _ in claimed])
    spans: list[tuple[int, int, str]] = []
    for run in _runs(items):
        for c in _select(run, _candidates(run, text)):
            if run.elems[c.i].kind == "ph":
                continue
            spans.append((run.elems[c.i].start, run.elems[c.j].end, c.kind))
    return spans


# --------------------------------------------------------------------------------------------- #
# Written IBANs (letters allowed in the BBAN)
# --------------------------------------------------------------------------------------------- #

_IBAN_HEAD = re.compile(r"(?<![A-Za-z0-9])(?:[A-Z]{2}|[a-z]{2})(?=[0-9]{2})")


def _written_ibans(text: str) -> list[tuple[int, int, str]]:
    out: list[tuple[int, int, str]] = []
    n = len(text)
    for m in _IBAN_HEAD.finditer(text):
        cc = m.group(0).upper()
        length = IBAN_LENGTHS.get(cc)
        if length is None:
            continue
        chars = [cc, text[m.end()], text[m.end() + 1]]
        pos = m.end() + 2
        count = 4
        while count < length and pos < n:
            ch = text[pos]
            if ch.isascii() and (ch.isdigit() or ch.isupper()):
                chars.append(ch)
                count += 1
                pos += 1
            elif ch in " -" and pos + 1 < n and text[pos + 1].isascii() and (text[pos + 1].isdigit() or text[pos + 1].isupper()):
                pos += 1
            else:
                break
        if count != length or (pos < n and text[pos].isascii() and text[pos].isalnum()):
            continue
        # A complete IBAN shape with a wrong checksum is shielded (kind ""): kept as it is, and no
        # later pass may carve a phone or card number out of it (``NL54 AAAA 0100 0000 00``).
        out.append((m.start(), pos, "IBAN" if iban_is_valid("".join(chars)) else ""))
    return out


# --------------------------------------------------------------------------------------------- #
# E-mail addresses
# --------------------------------------------------------------------------------------------- #

_EMAIL_WRITTEN = re.compile(
    r"(?<![\w.+\-])[\w%+\-](?:[\w.%+\-]*[\w%+\-])?@(?:[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,}(?!\w)"
)
_AT_WORDS = frozenset({"arobase", "arobas", "arrobase", "arrobas", "arobaze", "at"})
_TLDS = frozenset({
    "com", "fr", "net", "org", "eu", "be", "ch", "de", "lu", "io", "info", "biz", "co", "uk", "es", "it",
    "ca", "us", "nl", "pt", "re", "mc", "invalid", "test", "example", "bzh", "paris", "email", "online",
})
_PROVIDERS = frozenset({
    "gmail", "hotmail", "yahoo", "outlook", "orange", "free", "sfr", "wanadoo", "laposte", "icloud",
    "live", "msn", "bbox", "aol", "gmx", "protonmail", "proton", "numericable", "neuf", "club-internet",
})
_LOCAL_STOP = frozenset({
    "c'est", "cest", "est", "mon", "ma", "mail", "email", "e-mail", "adresse", "courriel", "mel", "c", "le", "la",
    "les", "de", "du", "oui", "non", "alors", "donc", "voila", "euh", "bien", "sur", "a", "et", "ou", "que", "qui",
    "vous", "je", "j'ai", "tout", "simplement", "comme", "mais", "pour", "l'adresse", "mon adresse", "point",
    "tiret", "underscore", "moins", "bas", "c'est-a-dire", "voici", "mail", "mails", "e-mails",
})
_DOT_WORDS = frozenset({"point"})
_LABEL_KINDS = ("word", "num", "mixed", "cc")
_DASH_WORDS = frozenset({"tiret", "underscore", "moins"})


def _spoken_emails(text: str, items: list[_Item]) -> list[tuple[int, int, str]]:
    nz = [it for it in items if it.kind != "ws"]
    out: list[tuple[int, int, str]] = []
    for m, it in enumerate(nz):
        if not ((it.kind == "word" and it.norm in _AT_WORDS) or (it.kind == "punct" and it.text == "@")):
            continue
        # Domain: label (connector label)*, ending on a TLD, or a single known provider.
        labels: list[_Item] = []
        k = m + 1
        while k < len(nz) and nz[k].kind in _LABEL_KINDS:
            labels.append(nz[k])
            if k + 2 < len(nz) and ((nz[k + 1].kind == "word" and nz[k + 1].norm in _DOT_WORDS) or (nz[k + 1].kind == "punct" and nz[k + 1].text == ".")):
                if nz[k + 2].kind in _LABEL_KINDS and nz[k + 2].norm not in _AT_WORDS:
                    k += 2
                    continue
            break
        end_item: _Item | None = None
        for idx in range(len(labels) - 1, 0, -1):
            if _fold(labels[idx].text) in _TLDS:
                end_item = labels[idx]
                break
        if end_item is None and labels and _fold(labels[0].text) in _PROVIDERS:
            end_item = labels[0]
        if end_item is None:
            continue
        # Local part, backwards: element ((connector element) | (element before a number))*.
        def element(x: _Item) -> bool:
            return x.kind in ("num", "mixed") or (x.kind == "word" and x.norm not in _LOCAL_STOP and x.norm not in _AT_WORDS)

        k = m - 1
        if k < 0 or not element(nz[k]):
            continue
        first = nz[k]
        count = 1
        while count < 10:
            prev = nz[k - 1] if k >= 1 else None
            if prev is None:
                break
            if (prev.kind == "word" and prev.norm in _DOT_WORDS | _DASH_WORDS) or (prev.kind == "punct" and prev.text in ".-_"):
                conn_k = k - 1
                if conn_k >= 1 and element(nz[conn_k - 1]):
                    k = conn_k - 1
                    first = nz[k]
                    count += 1
                    continue
                break
            if prev.kind == "word" and prev.norm == "bas" and k >= 2 and nz[k - 2].kind == "word" and nz[k - 2].norm == "tiret":
                if k >= 3 and element(nz[k - 3]):
                    k -= 3
                    first = nz[k]
                    count += 1
                    continue
                break
            if element(prev) and (nz[k].kind == "num" or prev.kind == "num"):
                k -= 1
                first = nz[k]
                count += 1
                continue
            break
        out.append((first.start, end_item.end, "EMAIL"))
    return out


# --------------------------------------------------------------------------------------------- #
# Dates of birth
# --------------------------------------------------------------------------------------------- #

_MONTHS = {
    "janvier": 1, "fevrier": 2, "fevr": 2, "fev": 2, "mars": 3, "avril": 4, "avr": 4, "mai": 5, "juin": 6,
    "juillet": 7, "juil": 7, "aout": 8, "septembre": 9, "sept": 9, "octobre": 10, "oct": 10,
    "novembre": 11, "nov": 11, "decembre": 12, "dec": 12,
}
_DOB_CUE = re.compile(
    r"\b(?:dates?\s+de\s+naissance|n[éÉ]e?s?(?:\s*\(\s*e\s*\))?\s+(?:le|en)|naissance|anniversaire|DDN"
    r"|(?P<tight>(?:je\s+suis|vous\s+[êe]tes|tu\s+es|t['\u2019]es)\s+du))\b",
    re.I,
)
"""Birth cues. ``tight`` ones (colloquial "je suis du 12 mars 1985", only with a person as subject:
"le devis est du 12 mars" is not a birth date) need the date right after them and not opening a
range ("du 12 au 15 mars")."""
_DOB_RANGE_AFTER = re.compile(r"\s*(?:au|jusqu)\b", re.I)
_DOB_BLOCK = re.compile(
    r"effet|rendez|\brdv\b|rappel|pr[ée]l[èe]vement|signature|contrat|souscri|adh[ée]sion|[ée]ch[ée]ance"
    r"|r[ée]siliation|d[ée]but|d[ée]marr|commenc|expir|livraison|aujourd|demain|prochain|garantie"
    r"|couverture|jusqu|valable|[àa]\s+partir",
    re.I,
)
_DOB_BACK = re.compile(r"^\s*,?\s*(?:(?:c['\u2019]est|qui est|soit|est)\s+)?(?:ma|sa|votre|la|leur|mon|son)\s+$", re.I)
_SEP_DATE = re.compile(r"^\s*[/.\-]?\s*$")
_SEP_YEAR = re.compile(r"^\s*,?\s*$")


def _gap(text: str, a: _Item, b: _Item) -> str:
    return text[a.end : b.start]


def _year_at(nz: list[_Item], q: int) -> int | None:
    """Index of the last item of a year starting at ``nz[q]``, or None."""
    if q >= len(nz) or nz[q].kind != "num":
        return None
    it = nz[q]
    v = int(it.digits)
    if it.spoken:
        if v in (19, 20) and q + 1 < len(nz) and nz[q + 1].kind == "num" and nz[q + 1].spoken and 100 <= int(nz[q + 1].digits) <= 199:
            return q + 1  # "dix-neuf cent quatre-vingt-cinq"
        if v == 0 and q + 1 < len(nz) and nz[q + 1].kind == "num" and nz[q + 1].spoken and int(nz[q + 1].digits) <= 9:
            return q + 1  # "zéro cinq"
        return q if (v <= 99 or 1900 <= v <= 2099) else None
    if len(it.digits) == 4 and 1900 <= v <= 2099 or len(it.digits) == 2:
        return q
    return None


def _day_month_numeric(nz: list[_Item], q: int, lo: int, hi: int) -> tuple[int, int] | None:
    """A numeric day or month at ``nz[q]`` (``04``, ``4``, ``zéro quatre``): (value, last index)."""
    if q >= len(nz) or nz[q].kind != "num":
        return None
    it = nz[q]
    if it.spoken and it.digits == "0" and q + 1 < len(nz) and nz[q + 1].kind == "num" and nz[q + 1].spoken and len(nz[q + 1].digits) == 1:
        v = int(nz[q + 1].digits)
        return (v, q + 1) if lo <= v <= hi else None
    if len(it.digits) <= 2 and lo <= int(it.digits) <= hi:
        return int(it.digits), q
    return None


def _date_at(text: str, nz: list[_Item], p: int) -> int | None:
    """Index of the last item of a date starting at ``nz[p]``, or None."""
    it = nz[p]
    # Compact ddmmyyyy / ddmmyy.
    if it.kind == "num" and not it.spoken and len(it.digits) in (6, 8):
        d, mth = int(it.digits[:2]), int(it.digits[2:4])
        year_ok = len(it.digits) == 6 or 1900 <= int(it.digits[4:]) <= 2099
        return p if 1 <= d <= 31 and 1 <= mth <= 12 and year_ok else None
    # Month + year ("mars 1985").
    if it.kind == "word" and it.norm in _MONTHS:
        if p + 1 < len(nz) and _SEP_YEAR.match(_gap(text, it, nz[p + 1])):
            return _year_at(nz, p + 1)
        return None
    # Day.
    if it.kind == "ord" or (it.kind == "word" and it.norm == "premier"):
        q = p + 1
    else:
        day = _day_month_numeric(nz, p, 1, 31)
        if day is None:
            return None
        q = day[1] + 1
    if q >= len(nz) or not _SEP_DATE.match(_gap(text, nz[q - 1], nz[q])):
        return None
    month = nz[q]
    if month.kind == "word" and month.norm in _MONTHS:
        if q + 1 < len(nz) and _SEP_YEAR.match(_gap(text, month, nz[q + 1])):
            y = _year_at(nz, q + 1)
            if y is not None:
                return y
        return q
    numeric = _day_month_numeric(nz, q, 1, 12)
    if numeric is None:
        return None
    r = numeric[1] + 1
    if r < len(nz) and _SEP_DATE.match(_gap(text, nz[r - 1], nz[r])):
        return _year_at(nz, r)
    return None


def _dob_spans(text: str, claimed: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    cues = list(_DOB_CUE.finditer(text))
    if not cues:
        return []
    items = _items(text, [(s, e) for s, e, _ in claimed])
    # Date separators live in the gaps between items (checked by _SEP_DATE / _SEP_YEAR).
    nz = [it for it in items if it.kind != "ws" and not (it.kind == "punct" and it.text in "/.-,")]
    dates: list[tuple[int, int]] = []  # (start, end), non-overlapping, left to right
    placeholders = [(it.start, it.end) for it in nz if it.kind == "ph" and it.digits == "DATE_NAISSANCE"]
    p = 0
    while p < len(nz):
        if nz[p].kind in ("num", "word", "ord"):
            last = _date_at(text, nz, p)
            if last is not None:
                dates.append((nz[p].start, nz[last].end))
                p = last + 1
                continue
        p += 1
    out: list[tuple[int, int, str]] = []
    for cue in cues:
        back = [d for d in dates if d[1] <= cue.start() and _DOB_BACK.match(text[d[1] : cue.start()])]
        back_ph = [ph for ph in placeholders if ph[1] <= cue.start() and _DOB_BACK.match(text[ph[1] : cue.start()])]
        if back or back_ph:
            out.extend((s, e, "DATE_NAISSANCE") for s, e in back)
            continue
        nxt = next((d for d in dates if d[0] >= cue.end()), None)
        if nxt is None or nxt[0] - cue.end() > DOB_WINDOW:
            continue
        if cue.group("tight") and (text[cue.end() : nxt[0]].strip() or _DOB_RANGE_AFTER.match(text, nxt[1])):
            continue
        if any(cue.end() <= ph[0] < nxt[0] for ph in placeholders):
            continue  # this cue's date is already redacted
        if _DOB_BLOCK.search(text[cue.end() : nxt[0]]):
            continue
        out.append((nxt[0], nxt[1], "DATE_NAISSANCE"))
    return out


# --------------------------------------------------------------------------------------------- #
# redact
# --------------------------------------------------------------------------------------------- #


def _add(claimed: list[tuple[int, int, str]], spans: list[tuple[int, int, str]]) -> None:
    for s, e, kind in sorted(spans):
        if s < e and not any(s < ce and cs < e for cs, ce, _ in claimed):
            claimed.append((s, e, kind))


def redact(text: str) -> Redaction:
    """Replace every detected personal value by its typed placeholder.

    Passes, each skipping what an earlier one claimed: written IBANs (a complete IBAN shape with a
    wrong checksum is claimed too, and kept), e-mail addresses (written, then spoken), digit runs
    (IBAN/RIB, NIR, card, phone), dates of birth.
    """
    if not isinstance(text, str) or not text:
        return Redaction(text if isinstance(text, str) else "", [])
    claimed: list[tuple[int, int, str]] = []
    _add(claimed, _written_ibans(text))
    _add(claimed, [(m.start(), m.end(), "EMAIL") for m in _EMAIL_WRITTEN.finditer(text)])
    _add(claimed, _spoken_emails(text, _items(text, [(s, e) for s, e, _ in claimed])))
    _add(claimed, _run_spans(text, claimed))
    _add(claimed, _dob_spans(text, claimed))
    claimed.sort()
    parts: list[str] = []
    findings: list[Finding] = []
    pos = 0
    for s, e, kind in claimed:
        if not kind:
            continue  # shield: a look-alike that stays
        parts.append(text[pos:s])
        parts.append(PLACEHOLDERS[kind])
        findings.append(Finding(kind, s, e, e - s))
        pos = e
    parts.append(text[pos:])
    return Redaction("".join(parts), findings)


# --------------------------------------------------------------------------------------------- #
# Timeline helpers
# --------------------------------------------------------------------------------------------- #

_HEADER_PHONE_FIELDS = ("from_number", "to_number")


def redact_timeline(timeline: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A redacted deep copy of a timeline built by :func:`~auditflow_dagster.core.timeline.build_timeline`.

    Chunk ``full_text`` goes through :func:`redact` (chunk indices, speakers and timestamps are
    unchanged, so citations keep their addresses). ``from_number`` / ``to_number`` are printed in the
    recording header the LLM sees and are phone numbers by definition: any value holding 6 digits or
    more becomes ``[TEL]`` whatever its format.
    """
    out = copy.deepcopy(timeline or [])
    for rec in out:
        if not isinstance(rec, dict):
            continue
        for key in _HEADER_PHONE_FIELDS:
            value = rec.get(key)
            if isinstance(value, str) and sum(ch.isdigit() for ch in value) >= 6:
                rec[key] = PLACEHOLDERS["TEL"]
        for chunk in rec.get("chunks") or []:
            if isinstance(chunk, dict) and isinstance(chunk.get("full_text"), str):
                chunk["full_text"] = redact(chunk["full_text"]).text
    return out


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def spoken_facts(timeline: list[dict[str, Any]]) -> list[SpokenFact]:
    """Which kinds of personal data were said, by which speaker, in which chunk (issue 11 §2).

    Computed on the original (unredacted) chunk text with the same detectors as :func:`redact`.
    The speaker is the ``speaker_X`` prefix of the line holding the value; the time is the chunk
    start (the timeline has no per-line timestamps), as for citations. One fact per
    (kind, speaker, recording, chunk), in timeline order.
    """
    facts: list[SpokenFact] = []
    seen: set[SpokenFact] = set()
    for rpos, rec in enumerate(timeline or []):
        if not isinstance(rec, dict):
            continue
        ri = _int(rec.get("recording_index"), rpos)
        for cpos, chunk in enumerate(rec.get("chunks") or []):
            if not isinstance(chunk, dict):
                continue
            text = chunk.get("full_text") if isinstance(chunk.get("full_text"), str) else ""
            findings = redact(text).findings
            if not findings:
                continue
            ci = _int(chunk.get("chunk_index"), cpos)
            when = minutage(chunk.get("start_timestamp") or 0)
            for f in findings:
                line_start = text.rfind("\n", 0, f.start) + 1
                line_end = text.find("\n", line_start)
                line = text[line_start : line_end if line_end >= 0 else len(text)]
                speaker, sep, _ = line.partition(": ")
                fact = SpokenFact(f.kind, speaker.strip() if sep and speaker.strip() else "unknown", ri, ci, when)
                if fact not in seen:
                    seen.add(fact)
                    facts.append(fact)
    return facts


_FACT_PHRASES = {
    "IBAN": "un IBAN (coordonnées bancaires) a été énoncé",
    "CARTE": "un numéro de carte bancaire a été énoncé",
    "NIR": "un numéro de sécurité sociale (NIR) a été énoncé",
    "TEL": "un numéro de téléphone a été énoncé",
    "EMAIL": "une adresse e-mail a été énoncée",
    "DATE_NAISSANCE": "une date de naissance a été énoncée",
}

FACTS_HEADER = (
    "DONNÉES PERSONNELLES ÉNONCÉES PENDANT LES APPELS (détection automatique ; dans la transcription, "
    "les valeurs sont remplacées par les marqueurs [IBAN], [CARTE], [NIR], [TEL], [EMAIL], [DATE_NAISSANCE]) :"
)
FACTS_NONE = "- Aucune de ces données n'a été détectée dans les transcriptions."


def facts_text(facts: list[SpokenFact]) -> str:
    """The facts as a prompt section: one line per fact, labels 1-based like the timeline text.

    Neutral wording (what was said, by whom, when), no judgement: deciding whether it breaks a
    rule is the audit step's job.
    """
    lines = [FACTS_HEADER]
    for f in facts:
        phrase = _FACT_PHRASES.get(f.kind, f"une donnée de type {f.kind} a été énoncée")
        marker = PLACEHOLDERS.get(f.kind, f"[{f.kind}]")
        lines.append(
            f"- {f.minutage} (enregistrement #{f.recording_index + 1}, chunk {f.chunk_index + 1}) : "
            f"{phrase} par {f.speaker} — marqueur {marker}"
        )
    if not facts:
        lines.append(FACTS_NONE)
    return "\n".join(lines) + "\n"
