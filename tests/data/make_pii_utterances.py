"""Regenerate ``tests/data/pii_utterances.jsonl``: synthetic French call utterances labelled with PII.

Usage (from the repository root)::

    python tests/data/make_pii_utterances.py

Deterministic (fixed seed): running it again rewrites the same file. Every value is synthetic; the
IBAN, RIB, NIR and card checksums are computed here, independently of the redaction module, so the
set does not inherit that module's bugs.

One JSON object per line::

    {"text": "...", "pii": [{"kind": "TEL", "value": "06 12 34 56 78"}],
     "near_misses": [{"kind": "order_number", "value": "4578 1236 9874"}], "form": "tel/pairs"}

``pii`` values (kinds ``IBAN``, ``CARTE``, ``NIR``, ``TEL``, ``EMAIL``, ``DATE_NAISSANCE``) and
``near_misses`` values occur exactly as written in ``text``. ``near_misses`` are look-alikes that
must stay (order numbers, prices, appointment dates, invalid checksums…); ``form`` says which
template produced the line.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SEED = 20250611
OUT = Path(__file__).with_name("pii_utterances.jsonl")

# --------------------------------------------------------------------------------------------- #
# French number words
# --------------------------------------------------------------------------------------------- #

_SMALL = [
    "zéro", "un", "deux", "trois", "quatre", "cinq", "six", "sept", "huit", "neuf", "dix", "onze",
    "douze", "treize", "quatorze", "quinze", "seize",
]
_TENS = {2: "vingt", 3: "trente", 4: "quarante", 5: "cinquante", 6: "soixante"}


def below100(n: int, hyphen: bool = True) -> str:
    """French spelling of 0–99; ``hyphen=False`` mimics speech-to-text without hyphens."""
    sep = "-" if hyphen else " "
    if n < 17:
        return _SMALL[n]
    if n < 20:
        return f"dix{sep}{_SMALL[n - 10]}"
    t, u = divmod(n, 10)
    if t == 7:
        return "soixante et onze" if u == 1 else f"soixante{sep}{below100(10 + u, hyphen)}"
    if t == 8:
        return f"quatre{sep}vingts" if u == 0 else f"quatre{sep}vingt{sep}{_SMALL[u]}"
    if t == 9:
        return f"quatre{sep}vingt{sep}{below100(10 + u, hyphen)}"
    if u == 0:
        return _TENS[t]
    if u == 1:
        return f"{_TENS[t]} et un"
    return f"{_TENS[t]}{sep}{_SMALL[u]}"


def words(n: int, hyphen: bool = True) -> str:
    """French spelling of 0–999 999 (traditional: hyphens below 100, spaces around cent/mille)."""
    if n < 100:
        return below100(n, hyphen)
    if n < 1000:
        h, r = divmod(n, 100)
        head = "cent" if h == 1 else f"{_SMALL[h]} cent{'s' if r == 0 else ''}"
        return head if r == 0 else f"{head} {below100(r, hyphen)}"
    th, r = divmod(n, 1000)
    if th > 999:
        raise ValueError(n)
    head_words = words(th, hyphen)
    if head_words.endswith(("vingts", "cents")):
        head_words = head_words[:-1]  # quatre-vingt mille, deux cent mille
    head = "mille" if th == 1 else f"{head_words} mille"
    return head if r == 0 else f"{head} {words(r, hyphen)}"


def read_group(g: str, hyphen: bool = True) -> str:
    """A digit group as said aloud: leading zeros one by one, then the number (``0112`` → zéro cent douze)."""
    stripped = g.lstrip("0")
    zeros = ["zéro"] * (len(g) - len(stripped))
    return " ".join(zeros + ([words(int(stripped), hyphen)] if stripped else []))


def read_digits(g: str) -> str:
    return " ".join(_SMALL[int(d)] for d in g)


def read_pairs(s: str, hyphen: bool = True) -> list[str]:
    """Digit pairs as read on the phone: ``06`` → zéro six, ``34`` → trente-quatre."""
    out = []
    for i in range(0, len(s), 2):
        chunk = s[i : i + 2]
        out.append(read_group(chunk, hyphen) if len(chunk) == 2 else _SMALL[int(chunk)])
    return out


def group(s: str, sizes: list[int]) -> list[str]:
    out, pos = [], 0
    for size in sizes:
        out.append(s[pos : pos + size])
        pos += size
    if pos < len(s):
        out.append(s[pos:])
    return [g for g in out if g]


def chunks(s: str, n: int) -> list[str]:
    return [s[i : i + n] for i in range(0, len(s), n)]


# --------------------------------------------------------------------------------------------- #
# Checksums (independent implementations)
# --------------------------------------------------------------------------------------------- #


def luhn_digit(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


def luhn_ok(s: str) -> bool:
    return luhn_digit(s[:-1]) == s[-1]


def _alnum_to_int(s: str) -> int:
    return int("".join(str(int(c, 36)) for c in s))


def iban_from_bban(cc: str, bban: str) -> str:
    check = 98 - _alnum_to_int(bban + cc + "00") % 97
    return f"{cc}{check:02d}{bban}"


def iban_ok(iban: str) -> bool:
    return _alnum_to_int(iban[4:] + iban[:4]) % 97 == 1


def rib_key(bank: str, branch: str, account: str) -> int:
    return 97 - (89 * int(bank) + 15 * int(branch) + 3 * int(account)) % 97


def nir_key(body13: str) -> int:
    n = body13.replace("2A", "19").replace("2B", "18")
    return 97 - int(n) % 97


# --------------------------------------------------------------------------------------------- #
# Value generators
# --------------------------------------------------------------------------------------------- #

FR_BANKS = ["30006", "30004", "30003", "30002", "10278", "20041", "11315", "13335", "14505", "16606", "18206", "17515", "12506", "10107"]
ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


def fr_bban(rng: random.Random) -> str:
    bank, branch, account = rng.choice(FR_BANKS), digits(rng, 5), digits(rng, 11)
    return f"{bank}{branch}{account}{rib_key(bank, branch, account):02d}"


def foreign_bban(rng: random.Random, cc: str) -> str:
    if cc == "DE":
        return digits(rng, 18)
    if cc == "ES":
        return digits(rng, 20)
    if cc == "IT":
        return rng.choice(UPPER) + digits(rng, 10) + "".join(rng.choice("0123456789") for _ in range(12))
    if cc == "BE":
        base = digits(rng, 10)
        return base + f"{(int(base) % 97) or 97:02d}"
    if cc == "NL":
        return rng.choice(["ABNA", "RABO", "INGB", "TRIO"]) + digits(rng, 10)
    if cc == "LU":
        return digits(rng, 3) + "".join(rng.choice(ALNUM) for _ in range(13))
    if cc == "PT":
        return digits(rng, 21)
    if cc == "GB":
        return rng.choice(["NWBK", "BARC", "MIDL", "LOYD"]) + digits(rng, 14)
    if cc == "AT":
        return digits(rng, 16)
    if cc == "CH":
        return digits(rng, 17)
    raise ValueError(cc)


def card_number(rng: random.Random, brand: str) -> str:
    if brand == "visa":
        body = rng.choice(["4970", "4974", "4561", "4532", "4916"]) + digits(rng, 11)
    elif brand == "mc":
        body = rng.choice(["51", "52", "53", "54", "55"]) + digits(rng, 13)
    elif brand == "amex":
        body = rng.choice(["34", "37"]) + digits(rng, 12)
    else:
        raise ValueError(brand)
    return body + luhn_digit(body)


def nir_number(rng: random.Random, corsica: bool = False) -> str:
    sex = rng.choice("12")
    yy = f"{rng.randint(0, 99):02d}"
    mm = f"{rng.randint(1, 12):02d}"
    dept = rng.choice(["2A", "2B"]) if corsica else f"{rng.choice([d for d in range(1, 96) if d != 20]):02d}"
    commune = f"{rng.randint(1, 990):03d}"
    order = f"{rng.randint(1, 999):03d}"
    body = sex + yy + mm + dept + commune + order
    return body + f"{nir_key(body):02d}"


def phone_number(rng: random.Random) -> str:
    return "0" + rng.choice("6677123459") + digits(rng, 8)


# --------------------------------------------------------------------------------------------- #
# Formatting of values
# --------------------------------------------------------------------------------------------- #


def fmt_iban(rng: random.Random, iban: str, form: str) -> str:
    cc, check, bban = iban[:2], iban[2:4], iban[4:]
    if form == "grouped":
        return " ".join(chunks(iban, 4))
    if form == "compact":
        return iban
    if form == "lower":
        return " ".join(chunks(iban.lower(), 4))
    if form == "pairs":
        return f"{cc} {check} " + " ".join(chunks(bban, 2))
    if form == "spelled":
        return f"{cc[0]} {cc[1]} {check} " + " ".join(chunks(bban, 4))
    if form == "spoken_groups":
        groups = chunks(bban, 4)
        return f"{cc[0]} {cc[1]} {words(int(check))}, " + ", ".join(read_group(g) for g in groups)
    if form == "spoken_digits":
        groups = chunks(bban, 4)
        return f"{cc} {read_digits(check)}, " + ", ".join(read_digits(g) for g in groups)
    if form == "spoken_rib":
        groups = group(bban, [5, 5, 3, 4, 4, 2])  # bank, branch, account in 3-4-4, RIB key
        return f"{cc}{check}, " + ", ".join(read_group(g) for g in groups)
    raise ValueError(form)


def fmt_card(rng: random.Random, card: str, form: str) -> str:
    sizes = [4, 6, 5] if len(card) == 15 else [4, 4, 4, 4]
    groups = group(card, sizes)
    if form == "grouped":
        return " ".join(groups)
    if form == "compact":
        return card
    if form == "dashes":
        return "-".join(groups)
    if form == "spoken_digits":
        return ", ".join(read_digits(g) for g in groups)
    if form == "spoken_pairs":
        return ", ".join(read_pairs(card))
    if form == "spoken_groups":
        return ", ".join(read_group(g) for g in groups)
    raise ValueError(form)


def fmt_nir(rng: random.Random, nir: str, form: str) -> str:
    parts = group(nir, [1, 2, 2, 2, 3, 3, 2])
    if form == "spaced":
        return " ".join(parts)
    if form == "compact":
        return nir
    if form == "key":
        return " ".join(parts[:-1]) + ", clé " + parts[-1]
    if form == "spoken":
        spoken = []
        for p in parts:
            spoken.append(f"deux {p[1]}" if p in ("2A", "2B") else read_group(p))
        return ", ".join(spoken[:-1]) + ", clé " + spoken[-1]
    raise ValueError(form)


def fmt_phone(rng: random.Random, phone: str, form: str) -> str:
    pairs = chunks(phone, 2)
    national = phone[1:]
    if form == "pairs":
        return " ".join(pairs)
    if form == "compact":
        return phone
    if form == "dots":
        return ".".join(pairs)
    if form == "dashes":
        return "-".join(pairs)
    if form == "intl":
        return "+33 " + national[0] + " " + " ".join(chunks(national[1:], 2))
    if form == "intl_compact":
        return "+33" + national
    if form == "intl_trunk":
        return "+33 (0)" + national[0] + " " + " ".join(chunks(national[1:], 2))
    if form == "0033":
        return "0033 " + national[0] + " " + " ".join(chunks(national[1:], 2))
    if form == "spoken_pairs":
        return ", ".join(read_pairs(phone))
    if form == "spoken_pairs_spaces":
        return " ".join(read_pairs(phone))
    if form == "spoken_digits":
        return " ".join(_SMALL[int(d)] for d in phone)
    if form == "spoken_plus":
        return "plus trente-trois, " + _SMALL[int(national[0])] + ", " + ", ".join(read_pairs(national[1:]))
    if form == "mixed":
        return "zéro " + _SMALL[int(phone[1])] + " " + " ".join(pairs[1:])
    raise ValueError(form)


FIRST = ["jean", "marie", "pierre", "sophie", "luc", "claire", "nicolas", "isabelle", "thomas", "camille", "julien", "nathalie", "olivier", "lea", "hugo", "chloe"]
LAST = ["dupont", "martin", "bernard", "petit", "durand", "leroy", "moreau", "simon", "laurent", "lefebvre", "michel", "garcia", "roux", "fournier"]
DOMAINS = [("gmail", "com"), ("orange", "fr"), ("free", "fr"), ("hotmail", "fr"), ("yahoo", "fr"), ("laposte", "net"), ("outlook", "com"), ("sfr", "fr"), ("wanadoo", "fr"), ("example", "org")]


def email_parts(rng: random.Random) -> tuple[list[str], str, str]:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    sep = rng.choice([".", ".", "-", "_", ""])
    num = rng.choice(["", "", str(rng.randint(1, 99))])
    domain, tld = rng.choice(DOMAINS)
    return [first, sep, last, num], domain, tld


def fmt_email(rng: random.Random, form: str) -> str:
    (first, sep, last, num), domain, tld = email_parts(rng)
    if form == "written":
        return f"{first}{sep}{last}{num}@{domain}.{tld}"
    conn = {".": " point ", "-": " tiret ", "_": " tiret bas ", "": " point "}[sep]
    num_words = f" {words(int(num))}" if num else ""
    at = {"spoken": "arobase", "spoken_at": "at", "spoken_symbol": "@"}.get(form, "arobase")
    if form == "spoken_mixed":
        return f"{first}.{last}{num} arobase {domain} point {tld}"
    return f"{first}{conn}{last}{num_words} {at} {domain} point {tld}"


MOIS = ["janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août", "septembre", "octobre", "novembre", "décembre"]


def fmt_date(rng: random.Random, form: str, year_range: tuple[int, int] = (1940, 2005)) -> str:
    y, m, d = rng.randint(*year_range), rng.randint(1, 12), rng.randint(1, 28)
    if form == "text":
        return f"{'1er' if d == 1 else d} {MOIS[m - 1]} {y}"
    if form == "slash":
        return f"{d:02d}/{m:02d}/{y}"
    if form == "dash":
        return f"{d:02d}-{m:02d}-{y}"
    if form == "dots_short":
        return f"{d:02d}.{m:02d}.{y % 100:02d}"
    if form == "spaces":
        return f"{d:02d} {m:02d} {y}"
    if form == "spoken":
        return f"{words(d)} {MOIS[m - 1]} {words(y)}"
    if form == "spoken_short":
        return f"{words(d)} {MOIS[m - 1]} {words(y % 100) if y % 100 >= 10 else words(y)}"
    if form == "spoken_dix_neuf":
        return f"{words(d)} {MOIS[m - 1]} dix-neuf cent {words(y % 100)}" if y < 2000 else f"{words(d)} {MOIS[m - 1]} {words(y)}"
    if form == "text_no_year":
        return f"{d} {MOIS[m - 1]}"
    if form == "month_year":
        return f"{MOIS[m - 1]} {y}"
    raise ValueError(form)


# --------------------------------------------------------------------------------------------- #
# Utterances
# --------------------------------------------------------------------------------------------- #


class Builder:
    def __init__(self) -> None:
        self.rows: list[dict] = []

    def add(self, form: str, template: str, pii: dict[str, tuple[str, str]] | None = None, near: dict[str, tuple[str, str]] | None = None) -> None:
        """``template`` uses ``{name}`` slots; ``pii`` / ``near`` map slot → (kind, value)."""
        values = {k: v for k, (_, v) in {**(pii or {}), **(near or {})}.items()}
        text = template.format(**values)
        row = {
            "text": text,
            "pii": [{"kind": k, "value": v} for k, v in (pii or {}).values()],
            "near_misses": [{"kind": k, "value": v} for k, v in (near or {}).values()],
            "form": form,
        }
        for item in row["pii"] + row["near_misses"]:
            assert text.count(item["value"]) >= 1, (text, item)
        self.rows.append(row)


def build(rng: random.Random) -> list[dict]:
    b = Builder()

    # ---------------------------------------------------------------- IBAN (valid)
    iban_templates = [
        "Oui, mon IBAN c'est {v}.",
        "Alors l'IBAN : {v}, et le BIC je vous l'envoie.",
        "Je vous lis ça, {v}.",
        "C'est {v}, c'est le compte joint.",
        "Vous notez ? {v}. Voilà.",
    ]
    for form in ["grouped", "compact", "pairs", "spelled", "spoken_groups", "spoken_digits", "spoken_rib", "lower"]:
        for _ in range(3):
            iban = iban_from_bban("FR", fr_bban(rng))
            b.add(f"iban/{form}", rng.choice(iban_templates), {"v": ("IBAN", fmt_iban(rng, iban, form))})
    for cc in ["DE", "ES", "IT", "BE", "NL", "LU", "PT", "GB", "AT", "CH"]:
        iban = iban_from_bban(cc, foreign_bban(rng, cc))
        form = rng.choice(["grouped", "compact"])
        b.add(f"iban/{cc}/{form}", "Mon compte est à l'étranger, l'IBAN est {v}.", {"v": ("IBAN", fmt_iban(rng, iban, form))})

    # ---------------------------------------------------------------- card (valid)
    card_templates = [
        "Le numéro de la carte c'est {v}.",
        "Ma carte bleue : {v}, elle expire fin 2027.",
        "Attendez, je prends ma carte… {v}.",
        "Vous pouvez prélever sur la carte {v} ?",
    ]
    for form in ["grouped", "compact", "dashes", "spoken_digits", "spoken_pairs", "spoken_groups"]:
        for brand in ["visa", "mc", "amex", "visa"]:
            if brand == "amex" and form == "spoken_pairs":
                brand = "visa"
            card = card_number(rng, brand)
            b.add(f"card/{brand}/{form}", rng.choice(card_templates), {"v": ("CARTE", fmt_card(rng, card, form))})

    # ---------------------------------------------------------------- NIR (valid)
    nir_templates = [
        "Mon numéro de sécurité sociale c'est le {v}.",
        "Sur ma carte vitale il y a {v}.",
        "Le numéro de sécu, {v}.",
        "Alors, {v}, c'est bien ça.",
    ]
    for form in ["spaced", "compact", "key", "spoken"]:
        for i in range(6):
            nir = nir_number(rng, corsica=(i == 5))
            b.add(f"nir/{form}{'/corse' if i == 5 else ''}", rng.choice(nir_templates), {"v": ("NIR", fmt_nir(rng, nir, form))})

    # ---------------------------------------------------------------- phone (valid)
    tel_templates = [
        "Vous pouvez me rappeler au {v}.",
        "Mon portable c'est le {v}, après 18 heures.",
        "Notez mon numéro : {v}.",
        "C'est un {v}, c'est mon fixe.",
        "Le {v}, sinon par mail.",
    ]
    tel_forms = ["pairs", "compact", "dots", "dashes", "intl", "intl_compact", "intl_trunk", "0033", "spoken_pairs", "spoken_pairs_spaces", "spoken_digits", "spoken_plus", "mixed"]
    for form in tel_forms:
        for _ in range(3 if form.startswith("spoken") or form == "pairs" else 2):
            b.add(f"tel/{form}", rng.choice(tel_templates), {"v": ("TEL", fmt_phone(rng, phone_number(rng), form))})

    # ---------------------------------------------------------------- e-mail (valid)
    email_templates = [
        "Mon adresse mail c'est {v}.",
        "Vous m'envoyez ça sur {v} s'il vous plaît.",
        "Oui, c'est {v}, tout en minuscules.",
        "L'adresse : {v}.",
    ]
    for form in ["written", "spoken", "spoken_at", "spoken_symbol", "spoken_mixed"]:
        for _ in range(6 if form in ("written", "spoken") else 3):
            b.add(f"email/{form}", rng.choice(email_templates), {"v": ("EMAIL", fmt_email(rng, form))})

    # ---------------------------------------------------------------- date of birth (valid)
    dob_templates = [
        "Je suis né le {v}.",
        "Je suis née le {v} à Lyon.",
        "Ma date de naissance c'est le {v}.",
        "Date de naissance : {v}.",
        "speaker_0: Votre date de naissance ?\nspeaker_1: Le {v}.",
        "speaker_0: Vous êtes né le ?\nspeaker_1: {v}.",
        "Mon mari est né le {v}, moi je suis plus jeune.",
        "Le {v}, c'est ma date de naissance.",
        "Moi je suis du {v}, et mon mari est plus âgé.",
    ]
    for form in ["text", "slash", "dash", "dots_short", "spaces", "spoken", "spoken_short", "spoken_dix_neuf", "text_no_year"]:
        for _ in range(3):
            b.add(f"dob/{form}", rng.choice(dob_templates), {"v": ("DATE_NAISSANCE", fmt_date(rng, form))})
    b.add("dob/month_year", "Je suis née en {v}.", {"v": ("DATE_NAISSANCE", fmt_date(rng, "month_year"))})
    b.add("dob/anniversaire", "Mon anniversaire c'est le {v}.", {"v": ("DATE_NAISSANCE", fmt_date(rng, "text_no_year"))})

    # ---------------------------------------------------------------- PII with near misses around
    for _ in range(4):
        iban = iban_from_bban("FR", fr_bban(rng))
        b.add("mixed/iban+date", "Mon IBAN c'est {i}, et le prélèvement se fera le {d}.",
              {"i": ("IBAN", fmt_iban(rng, iban, "grouped"))}, {"d": ("appointment_date", fmt_date(rng, "text", (2025, 2026)))})
    for _ in range(4):
        b.add("mixed/tel+price", "Rappelez-moi au {t} pour la formule à {p} par mois.",
              {"t": ("TEL", fmt_phone(rng, phone_number(rng), rng.choice(["pairs", "spoken_pairs"])))},
              {"p": ("price", f"{rng.randint(20, 180)},{rng.randint(0, 99):02d} euros")})
    for _ in range(3):
        b.add("mixed/dob+effet", "Je suis né le {d}, et la date d'effet ce sera le {e}.",
              {"d": ("DATE_NAISSANCE", fmt_date(rng, "text"))}, {"e": ("contract_date", fmt_date(rng, "text", (2025, 2026)))})
    for _ in range(3):
        b.add("mixed/email+cp", "Envoyez-le à {m}, j'habite au 12 rue des Lilas, {c} Lyon.",
              {"m": ("EMAIL", fmt_email(rng, rng.choice(["written", "spoken"])))}, {"c": ("postal_code", f"690{rng.randint(1, 9):02d}")})
    for _ in range(3):
        nir, phone = nir_number(rng), phone_number(rng)
        b.add("mixed/nir+tel", "Mon numéro de sécu c'est {n} et mon portable le {t}.",
              {"n": ("NIR", fmt_nir(rng, nir, "spaced")), "t": ("TEL", fmt_phone(rng, phone, "pairs"))})
    for _ in range(3):
        card = card_number(rng, "visa")
        b.add("mixed/card+order", "Pour la commande {o}, je paie avec la carte {c}.",
              {"c": ("CARTE", fmt_card(rng, card, "grouped"))}, {"o": ("order_number", digits(rng, 4) + " " + digits(rng, 4) + " " + digits(rng, 4))})

    # ---------------------------------------------------------------- near misses (no PII)
    def nm(form: str, template: str, **slots: tuple[str, str]) -> None:
        b.add(f"near/{form}", template, None, slots)

    for _ in range(6):
        nm("order", "Votre numéro de commande est le {o}.", o=("order_number", " ".join([digits(rng, 4), digits(rng, 4), digits(rng, 4)])))
    for _ in range(4):
        nm("order_alnum", "La référence du dossier c'est {o}.", o=("order_number", f"CMD-{rng.randint(2020, 2025)}-{digits(rng, 6)}"))
    for _ in range(4):
        nm("contract", "Votre contrat porte le numéro {o}.", o=("contract_number", f"{rng.randint(1, 9)} {digits(rng, 3)} {digits(rng, 3)}"))
    for _ in range(4):
        nm("policy_alnum", "Le numéro de police est {o}.", o=("policy_number", f"AZ{rng.randint(10, 99)}-{digits(rng, 8)}"))
    for _ in range(5):
        # 16 digits with a non-card prefix (some pass Luhn: customer numbers, not cards).
        num = rng.choice("789") + digits(rng, 15)
        nm("customer_16", "Votre numéro client c'est le {o}.", o=("customer_number", " ".join(chunks(num, 4))))
    for _ in range(4):
        nm("price_words", "La cotisation est de {p} par mois.", p=("price", f"{words(rng.randint(20, 199))} euros"))
    for _ in range(4):
        nm("price_digits", "Ça vous fera {p} par mois, frais compris.", p=("price", f"{rng.randint(20, 199)},{rng.randint(0, 99):02d} €"))
    for _ in range(3):
        nm("price_year", "Sur l'année ça fait {p}.", p=("amount", f"{rng.randint(1, 3)} {digits(rng, 3)} euros"))
    for _ in range(3):
        nm("amount_big", "Le plafond est de {p} par an.", p=("amount", f"{words(rng.randint(1, 9) * 100000 + rng.randint(0, 9) * 10000)} euros"))
    for _ in range(6):
        nm("appointment", "On se rappelle le {d} à {h}.", d=("appointment_date", fmt_date(rng, rng.choice(["text", "slash"]), (2025, 2026))),
           h=("time", rng.choice(["10h30", "14h", "15 h 45", "9h15", "seize heures trente"])))
    for _ in range(5):
        nm("effect_date", "La date d'effet est fixée au {d}.", d=("contract_date", fmt_date(rng, rng.choice(["text", "slash", "spoken"]), (2025, 2026))))
    for _ in range(3):
        nm("signature_date", "Le contrat a été signé le {d}.", d=("contract_date", fmt_date(rng, "slash", (2020, 2025))))
    for _ in range(3):
        nm("prelevement", "Le prélèvement aura lieu le {d} de chaque mois.", d=("day", str(rng.choice([5, 10, 15]))))
    for _ in range(3):
        nm("naissance_garantie", "La garantie naissance démarre le {d}.", d=("contract_date", fmt_date(rng, "text", (2025, 2026))))
    for _ in range(3):
        nm("naissance_rdv", "Pour la date de naissance on verra plus tard, le rendez-vous est le {d}.", d=("appointment_date", fmt_date(rng, "text", (2025, 2026))))
    for _ in range(4):
        nm("postal", "J'habite au {a} rue Victor Hugo, {c} {v}.", a=("street_number", str(rng.randint(1, 150))),
           c=("postal_code", rng.choice(["75011", "69003", "13001", "33000", "59800", "44000", "31000", "06000"])), v=("city", rng.choice(["Paris", "Lyon", "Marseille", "Bordeaux", "Lille", "Nantes"])))
    for _ in range(2):
        nm("postal_spoken", "Le code postal c'est {c}.", c=("postal_code", rng.choice(["treize zéro zéro un", "soixante-neuf zéro zéro trois", "trente-trois mille"])))
    for _ in range(5):
        short = rng.choice([
            " ".join(chunks(phone_number(rng)[:8], 2)),
            " ".join(chunks(phone_number(rng)[:9], 2)),
            "00 " + " ".join(chunks(digits(rng, 8), 2)),
        ])
        nm("phone_invalid", "Le numéro que j'ai noté c'est {t}, il en manque.", t=("phone_like", short))
    for _ in range(3):
        nm("phone_short", "Appelez le {t}, c'est le service client.", t=("phone_like", rng.choice(["3949", "36 55", "1015", "112"])))
    for _ in range(2):
        nm("phone_spoken_short", "C'est zéro six, {t}, je ne me souviens plus du reste.", t=("phone_like", ", ".join(read_pairs(digits(rng, 4)))))
    for _ in range(6):
        card = card_number(rng, rng.choice(["visa", "mc"]))
        bad = card[:-1] + str((int(card[-1]) + rng.randint(1, 9)) % 10)
        assert not luhn_ok(bad)
        nm("card_luhn", "Le numéro {c}, ah non, je me suis trompé.", c=("card_like", " ".join(chunks(bad, 4))))
    for _ in range(2):
        card = card_number(rng, "visa")
        bad = card[:-1] + str((int(card[-1]) + 5) % 10)
        nm("card_luhn_compact", "J'ai un numéro {c} sur le ticket.", c=("card_like", bad))
    for i in range(8):
        bban = fr_bban(rng)
        pos = rng.randrange(5, 21)  # a digit of the branch/account: IBAN and RIB keys both fail
        bad_bban = bban[:pos] + str((int(bban[pos]) + rng.randint(1, 9)) % 10) + bban[pos + 1 :]
        iban = iban_from_bban("FR", bban)
        bad = iban[:4] + bad_bban
        assert not iban_ok(bad)
        form = ["grouped", "compact", "pairs", "spoken_groups"][i % 4]
        nm("iban_mod97", "Il y a une erreur dans l'IBAN {i}, je vérifie.", i=("iban_like", fmt_iban(rng, bad, form)))
    for _ in range(2):
        nm("iban_short", "Le début de l'IBAN c'est {i}.", i=("iban_like", "FR76 " + " ".join(chunks(digits(rng, 12), 4))))
    for _ in range(5):
        nir = nir_number(rng)
        bad = nir[:-2] + f"{(int(nir[-2:]) % 97) + 1:02d}"
        assert bad != nir
        nm("nir_key", "J'ai noté {n}, il y a peut-être une faute.", n=("nir_like", " ".join(group(bad, [1, 2, 2, 2, 3, 3, 2]))))
    for _ in range(2):
        nm("nir_no_cue", "Le colis porte le code {n}.", n=("parcel_code", " ".join(group(nir_number(rng)[:13], [1, 2, 2, 2, 3, 3]))))
    nm("siret", "Notre SIRET est le {s}.", s=("siret", "732 829 320 00074"))
    nm("siret_compact", "Le SIRET du cabinet : {s}.", s=("siret", "73282932000074"))
    nm("siren", "SIREN {s}, c'est sur le site.", s=("siren", "732 829 320"))
    nm("orias", "Nous sommes immatriculés à l'ORIAS sous le numéro {s}.", s=("orias", "21 004 512"))
    for _ in range(2):
        nm("vacation_range", "Je suis du {a} au {c} en vacances.", a=("appointment_date", fmt_date(rng, "text_no_year")),
           c=("appointment_date", fmt_date(rng, "text", (2025, 2026))))
    for _ in range(3):
        nm("year", "J'ai changé de mutuelle en {y}.", y=("year", str(rng.randint(2010, 2024))))
    for _ in range(2):
        nm("year_born", "Je suis né en {y}, vous savez.", y=("year", str(rng.randint(1940, 2000))))
    for _ in range(3):
        nm("time", "Je suis disponible demain à {h}.", h=("time", rng.choice(["14h30", "9 h 30", "dix-sept heures", "18:45"])))
    for _ in range(3):
        nm("percent", "Le remboursement est de {p}.", p=("percent", rng.choice(["12,5 %", "80 %", "cent pour cent", "soixante-dix pour cent", "300 %"])))
    for _ in range(3):
        nm("age", "J'ai {a} ans et mon conjoint {c} ans.", a=("age", str(rng.randint(25, 80))), c=("age", words(rng.randint(25, 80))))
    for _ in range(2):
        nm("children", "Nous avons {n} enfants de {a} et {c} ans.", n=("count", words(rng.randint(2, 4))), a=("age", str(rng.randint(2, 9))), c=("age", str(rng.randint(10, 17))))
    nm("website", "Tout est sur {w}.", w=("website", "www.azur-sante.fr"))
    nm("website_spoken", "Tout est sur {w}.", w=("website", "azur santé point fr"))
    nm("email_no_at", "Envoyez un mail au service {w}.", w=("website", "contact point azur point fr"))
    nm("bic", "Le BIC c'est {w}.", w=("bic", "BNPAFRPP"))
    for _ in range(3):
        nm("formule", "La formule {f} à {p} euros, option {o}.", f=("count", str(rng.randint(1, 4))), p=("price", str(rng.randint(30, 120))), o=("count", words(rng.randint(1, 3))))
    for _ in range(3):
        nm("dates_list", "Les échéances sont le {a}, le {c} et le {d}.", a=("contract_date", fmt_date(rng, "slash", (2025, 2026))),
           c=("contract_date", fmt_date(rng, "slash", (2025, 2026))), d=("contract_date", fmt_date(rng, "slash", (2025, 2026))))
    for _ in range(3):
        nm("guarantee", "Plafond {a} euros, franchise {c} euros, délai {d} jours.", a=("amount", f"{rng.randint(1, 9)} {digits(rng, 3)}"),
           c=("amount", str(rng.randint(10, 300))), d=("count", str(rng.choice([14, 30, 90]))))
    for _ in range(3):
        nm("conversation", "Oui, je vous écoute, {x}.", x=("filler", rng.choice([
            "c'est pour mon fils qui a eu dix-huit ans", "on était trois à la maison en deux mille vingt",
            "j'ai payé quatre-vingt-dix-neuf euros quatre-vingt-dix", "le numéro un du marché",
        ])))
    return b.rows


def main() -> None:
    rng = random.Random(SEED)
    rows = build(rng)
    with OUT.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    n_pii = sum(1 for r in rows if r["pii"])
    print(f"{OUT}: {len(rows)} utterances, {n_pii} with PII, {sum(len(r['pii']) for r in rows)} PII values")


if __name__ == "__main__":
    main()
