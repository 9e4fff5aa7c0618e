"""Deterministic synthetic CRM data, recordings, transcripts and ground truth (demo / tests).

Everything is a pure function of the *fiche id*, itself a function of ``(day, index)``: a fiche id is
``"9" + YYYYMMDD + NNN`` (12 digits, ``NNN`` = 0-based index in the day), so by-id lookups, recording
URLs and transcripts can all be decoded without state. Randomness comes from SHA-256 seeded
:class:`random.Random` instances (never Python's salted ``hash()``), so the data is identical across
processes and machines.

Each fiche has 0–3 recorded calls (no call for roughly one fiche in twelve). The calls carry a French
phone sale of a *complémentaire santé* in which every control point of the bundled
``checklist.json`` is, per seed, said correctly (``PRESENT``), said vaguely or wrongly
(``PARTIEL``), or not said (``ABSENT``); the steps of the checklist are spread over the fiche's
calls in order. :func:`ground_truth` tells what was said where; :func:`expected_audit` derives the
expected step scores and compliance. The offline keyword auditor
(:mod:`auditflow_dagster.sample.offline_auditor`) finds exactly that ground truth.

The calls carry personal data, all of it *valid* so that the redaction in front of the LLM
(:mod:`auditflow_dagster.core.redaction`, which keeps checksum-failing near misses) must catch it:
the client reads an IBAN (mod-97 check digits, French RIB key) when asked for it, and in some calls
also gives a card number (Visa prefix, Luhn), a NIR (structure from the fiche, key) and an e-mail,
and leaves a mobile number; the advisor gives the service client number. These client sentences are
appended to existing client replies (never a new turn), so chunk indices and the ground truth are
unchanged (call durations, hence later calls' start times, grow by those words).
:func:`personal_data` lists the values and which of them the calls say.

Recording URLs follow the real gateway file-name pattern
``<uuid>-DD-MM-YY-HHhMM-<from>-<to>.mp3`` (spec 01 §1.4 / 02 §1.2) under
``{base_url}/recordings/<file name>?sig=<token>``; the uuid encodes the fiche and the call so the
transcript can be found again from the URL (or from the fake audio bytes) alone.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import math
import os
import random
import re
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from auditflow_dagster.core.audit_config import AuditConfigSpec, config_from_legacy_json

DEFAULT_BASE_URL = "https://crm.auditflow-sample.invalid"
DEFAULT_FICHES_PER_DAY = 40
#: Benchmarks fix the recordings per fiche (``bench.batch``: N fiches × 2 recordings) through this
#: variable, read by every process that generates (the CRM, the STT twin, run workers) so the data
#: stay consistent; unset, a fiche has 0–3 recordings (1 in 12 has none).
RECORDINGS_PER_FICHE_ENV = "AUDITFLOW_SAMPLE_RECORDINGS_PER_FICHE"
MAX_FICHES_PER_DAY = 999
MAX_RANGE_DAYS = 366
SAMPLE_TZ = ZoneInfo("Europe/Paris")
CHECKLIST_PATH = Path(__file__).with_name("checklist.json")
CHUNK_SIZE = 10  # messages per chunk (spec 02 §3.3)

CABINET = "Azur Santé Conseil"
ORIAS = "21 004 512"
SERVICE_TEL = "01 84 60 20 20"
AUDIO_MARKER = b"AUDITFLOW-SAMPLE-RECORDING:"

ADVISOR = "speaker_0"
CLIENT = "speaker_1"

_FICHE_ID = re.compile(r"^9(\d{8})(\d{3})$")
_FILENAME = re.compile(
    r"^(?P<uuid>(?P<ymd>\d{8})-(?P<idx>\d{4})-4(?P<rec>[0-9a-f]{3})-(?P<var>[89ab][0-9a-f]{3})-(?P<tail>[0-9a-f]{12}))"
    r"-(?P<dd>\d{2})-(?P<mm>\d{2})-(?P<yy>\d{2})-(?P<hh>\d{2})h(?P<mi>\d{2})-(?P<from>\d+)-(?P<to>\d+)\.mp3$",
    re.IGNORECASE,
)


# ---------------------------------------------------------------------------------------------
# Seeds, ids, checklist
# ---------------------------------------------------------------------------------------------


def _digest(*parts: Any) -> str:
    return hashlib.sha256("|".join(["auditflow-sample", *map(str, parts)]).encode()).hexdigest()


def _rng(*parts: Any) -> random.Random:
    return random.Random(int(_digest(*parts)[:32], 16))


def fiche_id_for(day: date, index: int) -> str:
    """``"9" + YYYYMMDD + NNN``."""
    if not 0 <= index <= MAX_FICHES_PER_DAY:
        raise ValueError("fiche index must be within 0..999")
    return f"9{day:%Y%m%d}{index:03d}"


def parse_fiche_id(fiche_id: str) -> tuple[date, int] | None:
    """Inverse of :func:`fiche_id_for`; ``None`` for ids this generator never produces."""
    m = _FICHE_ID.match(str(fiche_id or "").strip())
    if not m:
        return None
    try:
        day = datetime.strptime(m.group(1), "%Y%m%d").date()
    except ValueError:
        return None
    if not 2000 <= day.year <= 2099:
        return None
    return day, int(m.group(2))


@functools.lru_cache(maxsize=1)
def _checklist_raw() -> str:
    return CHECKLIST_PATH.read_text(encoding="utf-8")


def checklist_json() -> dict[str, Any]:
    """The bundled checklist in the legacy JSON format (a fresh copy)."""
    return json.loads(_checklist_raw())


@functools.lru_cache(maxsize=1)
def _checklist() -> AuditConfigSpec:
    return config_from_legacy_json(checklist_json())


def load_checklist() -> AuditConfigSpec:
    """The bundled checklist parsed with :func:`config_from_legacy_json` (a fresh copy)."""
    return _checklist().model_copy(deep=True)


# ---------------------------------------------------------------------------------------------
# Reference data (fictitious)
# ---------------------------------------------------------------------------------------------

PRENOMS_F = ["Camille", "Léa", "Chloé", "Manon", "Inès", "Sarah", "Julie", "Laura", "Émilie", "Nathalie", "Sophie", "Claire"]
PRENOMS_H = ["Lucas", "Hugo", "Thomas", "Nicolas", "Julien", "Antoine", "Mathieu", "Olivier", "Pierre", "Karim", "Louis", "Marc"]
NOMS = [
    "Dupont", "Moreau", "Lefèvre", "Garnier", "Roussel", "Fabre", "Perrin", "Chevalier", "Lambert", "Girard",
    "Bonnet", "Mercier", "Blanc", "Guérin", "Faure", "Rolland", "Morel", "Fournier", "Brun", "Gauthier",
]
VILLES = [
    ("69003", "Lyon"), ("44000", "Nantes"), ("59800", "Lille"), ("13008", "Marseille"), ("31000", "Toulouse"),
    ("33000", "Bordeaux"), ("67000", "Strasbourg"), ("35000", "Rennes"), ("21000", "Dijon"), ("37000", "Tours"),
]
RUES = ["rue des Lilas", "avenue Jean Jaurès", "boulevard Voltaire", "rue du Moulin", "impasse des Cerisiers", "allée des Tilleuls"]
AGENCES = [("1", "Agence Lyon Part-Dieu"), ("2", "Agence Nantes Centre"), ("3", "Agence Lille Europe"), ("4", "Agence Marseille Prado")]
GROUPES = [("11", "R1"), ("12", "R2"), ("13", "R3"), ("14", "R4")]
PROVENANCES = [("3", "Comparateur en ligne"), ("5", "Parrainage"), ("7", "Campagne e-mailing"), ("9", "Salon seniors")]
ANCIENS_ASSUREURS = ["Les Tilleuls Prévoyance", "Rhône Santé", "Atlantique Prévoyance", "Harmonie des Lacs", "Solidaris Ouest"]
REGIMES = [(1, "Régime général (salarié)"), (2, "Travailleur non salarié"), (3, "Retraité du régime général"), (4, "Alsace-Moselle")]
SITUATIONS = [(1, "Célibataire"), (2, "Marié(e)"), (3, "Pacsé(e)"), (4, "Divorcé(e)"), (5, "Veuf(ve)")]
PROFESSIONS = [("Infirmière", 4, "Profession intermédiaire"), ("Artisan", 2, "Artisan, commerçant"), ("Comptable", 5, "Employé"), ("Retraité", 7, "Retraité"), ("Enseignant", 3, "Cadre")]
GAMMES = [
    {"nom": "Vitalis", "base": 31.0, "formules": ["Essentiel", "Confort", "Confort Plus", "Premium"]},
    {"nom": "Sérénis", "base": 36.5, "formules": ["Initial", "Équilibre", "Intégrale"]},
]
ETIQUETTES = [
    ("Vente", "background-color:#2e7d32;color:#ffffff"),
    ("Rappel client", "background-color:#f9a825;color:#000000"),
    ("Devis envoyé", "background-color:#1565c0;color:#ffffff"),
    ("Senior", "background-color:#6a1b9a;color:#ffffff"),
]
MOIS = ["janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août", "septembre", "octobre", "novembre", "décembre"]

# 12 advisors, three per group.
USERS: list[dict[str, Any]] = []
for _i in range(12):
    _g = GROUPES[_i // 3]
    _ag = AGENCES[_i // 3]
    _female = _i % 2 == 0
    _pren = (PRENOMS_F if _female else PRENOMS_H)[(_i * 5) % 12]
    _nom = NOMS[(_i * 7 + 3) % len(NOMS)]
    USERS.append(
        {
            "id": str(101 + _i),
            "nom": _nom.upper(),
            "prenom": _pren,
            "telephone": f"01846020{_i + 30:02d}",
            "email": f"conseiller{101 + _i}@auditflow-sample.invalid",
            "login": f"cons{101 + _i}",
            "agence": _ag[1],
            "agence_id": _ag[0],
            "role": "Conseiller",
            "role_id": "3",
            "etat": "actif",
            "actif": True,
            "tv": True,
            "se": False,
            "groupe": _g[1],
            "groupe_id": _g[0],
            "female": _female,
        }
    )


def users_payload() -> dict[str, Any]:
    """``GET /utilisateurs`` body (spec 01 §1.5, CRM users)."""
    users = [{k: v for k, v in u.items() if k not in ("groupe", "groupe_id", "female")} for u in USERS]
    return {
        "success": True,
        "message": "OK",
        "data": {"utilisateurs": users, "total_count": len(users)},
        "timestamp": "2025-01-01T00:00:00.000Z",
    }


def groups_payload(include_users: bool = False) -> dict[str, Any]:
    """``GET /utilisateurs/groupes`` body; ``user_ids`` only with ``include_users``."""
    groupes = []
    for gid, gname in GROUPES:
        members = [u for u in USERS if u["groupe_id"] == gid]
        g: dict[str, Any] = {
            "id": gid,
            "nom": gname,
            "membres_count": len(members),
            "responsable_1": f"{members[0]['prenom']} {members[0]['nom']}",
            "responsable_2": None,
            "responsable_3": None,
        }
        if include_users:
            g["user_ids"] = [u["id"] for u in members]
        groupes.append(g)
    return {
        "success": True,
        "message": "OK",
        "data": {"groupes": groupes, "total_count": len(groupes)},
        "timestamp": "2025-01-01T00:00:00.000Z",
    }


# ---------------------------------------------------------------------------------------------
# Conversation scripts (written against checklist.json; see offline_auditor for the rules)
# ---------------------------------------------------------------------------------------------

# (step position, control point index 1-based) -> correct / partial-or-wrong advisor sentences and
# optional client replies. Every sentence is a single sentence (no inner ". ", "? ", "! ").
SCRIPTS: dict[tuple[int, int], dict[str, list[str]]] = {
    (1, 1): {
        "ok": [
            "Mon nom est {conseiller}, je vous appelle de la part du cabinet de courtage {cabinet}.",
            "Je me présente, mon nom est {conseiller}, du cabinet de courtage {cabinet}.",
        ],
        "partial": [
            "Mon nom est {prenom_conseiller}, je suis du cabinet, je crois que vous nous aviez contactés.",
            "C'est {prenom_conseiller} du cabinet de courtage, vous voyez qui je suis, je pense.",
        ],
        "reply": ["Oui bonjour, je vous écoute.", "Ah oui, bonjour."],
    },
    (1, 2): {
        "ok": [
            "Le numéro ORIAS du cabinet est le {orias}, vous pouvez le vérifier sur le registre officiel.",
            "Pour information, notre cabinet est immatriculé à l'ORIAS sous le numéro {orias}.",
        ],
        "partial": ["Le numéro ORIAS, je ne l'ai pas sous les yeux, il me semble qu'il figure sur notre site."],
    },
    (1, 3): {
        "ok": [
            "Je vous informe que notre conversation est enregistrée et que vous avez le droit de vous y opposer.",
            "Cette conversation est enregistrée pour des raisons de qualité, et vous avez le droit de vous y opposer à tout moment.",
        ],
        "partial": [
            "La conversation est enregistrée, normalement, pour la qualité.",
            "Notre conversation est peut-être enregistrée, ce n'est pas bien grave.",
        ],
        "reply": ["Pas de problème.", "D'accord, ça ne me dérange pas."],
    },
    (2, 1): {
        "ok": ["Quelle est votre situation familiale, et combien de personnes faut-il couvrir ?"],
        "partial": ["Pour votre situation familiale, je suppose que c'est juste pour vous."],
        "reply": ["{foyer}"],
    },
    (2, 2): {
        "ok": [
            "J'ai quelques questions : quels sont vos besoins de soins prioritaires, plutôt les dents, les lunettes, l'hôpital ?",
        ],
        "partial": ["Vos besoins de soins, je pense que c'est surtout les lunettes, non ?"],
        "reply": ["Surtout les dents, j'ai des couronnes à prévoir.", "Les lunettes surtout, et un peu de kiné."],
    },
    (2, 3): {
        "ok": ["Quel budget mensuel souhaitez-vous consacrer à votre complémentaire ?"],
        "partial": ["Côté budget, je pense qu'on reste sur du mensuel raisonnable."],
        "reply": ["Pas plus de soixante-dix euros si possible.", "Autour de cinquante euros, ce serait l'idéal."],
    },
    (3, 1): {
        "ok": ["Aujourd'hui, quelle est votre mutuelle actuelle, et quel assureur est en place ?"],
        "partial": ["Vous avez une mutuelle actuelle, je suppose, on regardera le reste après."],
        "reply": ["Je suis chez {ancien_assureur} depuis quelques années.", "C'est {ancien_assureur}, par mon ancien employeur."],
    },
    (3, 2): {
        "ok": ["Votre ancien contrat a-t-il une ancienneté supérieure à un an ?"],
        "partial": ["Votre contrat est assez ancien, je pense, donc ça devrait aller."],
        "reply": ["Oui, ça fait plus de trois ans.", "Oui, depuis longtemps."],
    },
    (3, 3): {
        "ok": ["Le cabinet s'occupe de toutes les démarches de résiliation pour vous."],
        "partial": ["Pour la résiliation, je pense que vous pourrez faire les démarches vous-même."],
        "reply": ["Très bien, ça m'arrange."],
    },
    (4, 1): {
        "ok": ["Je vous recommande la formule {formule} de notre gamme {gamme}."],
        "partial": ["Je vous recommande une formule, je crois que la {formule} irait bien."],
    },
    (4, 2): {
        "ok": [
            "Côté remboursements : hospitalisation à 100 %, dentaire à 200 % et optique jusqu'à 300 euros par an.",
        ],
        "partial": ["Les remboursements sont bons en hospitalisation, pour le reste on verra."],
        "reply": ["C'est intéressant pour les couronnes.", "Ça me paraît correct."],
    },
    (4, 3): {
        "ok": ["Il n'y a aucun délai de carence, et les exclusions sont la chirurgie esthétique et les cures thermales."],
        "partial": ["Pour le délai de carence, normalement il n'y en a pas."],
    },
    (5, 1): {
        "ok": ["Le montant de votre cotisation mensuelle sera de {prix} euros."],
        "partial": ["La cotisation mensuelle, c'est environ {prix_arrondi} euros."],
        "reply": ["C'est dans mon budget.", "Ça me va."],
    },
    (5, 2): {
        "ok": ["La date d'effet de vos garanties est fixée au {date_effet}."],
        "partial": ["Pour la date d'effet, je pense que ce sera le mois prochain."],
    },
    (5, 3): {
        "ok": ["Il n'y a aucun frais de dossier ni frais d'adhésion."],
        "partial": ["Des frais de dossier, je ne sais plus s'il y en a."],
    },
    (6, 1): {
        "ok": ["Vous disposez d'un droit de renonciation de 14 jours calendaires à compter de la signature."],
        "partial": [
            "Vous pouvez renoncer, je crois que c'est 7 jours.",
            "Si vous changez d'avis, vous avez un droit de renonciation, environ une semaine.",
        ],
    },
    (6, 2): {
        "ok": ["Pour exercer cette renonciation, il suffit de nous envoyer une lettre ou un courriel, selon les modalités prévues au contrat."],
        "partial": ["Pour la renonciation, normalement un courriel ou une lettre suffit."],
    },
    (6, 3): {
        "ok": ["En cas de renonciation, les sommes versées vous sont remboursées intégralement."],
        "partial": ["Si vous renoncez, les sommes vous seront remboursées, je pense."],
    },
    (7, 1): {
        "ok": ["Est-ce que vous me donnez votre consentement exprès pour cette adhésion ?"],
        "partial": ["Pour l'adhésion, je pense que j'ai votre consentement, on avance."],
        "reply": ["Oui, je suis d'accord, j'accepte.", "Oui, c'est bon pour moi."],
    },
    (7, 2): {
        "ok": ["Je vous envoie le bulletin d'adhésion par courriel pour la signature électronique."],
        "partial": ["Je vous envoie un bulletin pour la signature électronique, normalement par courriel."],
    },
    (7, 3): {
        "ok": ["Vous recevrez aussi les documents précontractuels : le DIPA et les conditions générales."],
        "partial": ["Les documents, vous les trouverez sur le site, je crois, avec les conditions générales."],
    },
    (8, 1): {
        "ok": ["Pouvez-vous me donner votre IBAN et le BIC de votre banque ?"],
        "partial": ["Votre IBAN, je le noterai plus tard."],
        "reply": ["Oui, c'est {iban_parle}.", "Je vous lis ça, {iban_parle}."],
    },
    (8, 2): {
        "ok": ["Êtes-vous bien titulaire du compte bancaire ?"],
        "partial": ["Le compte bancaire est à votre nom, je suppose."],
        "reply": ["Oui, c'est mon compte.", "Oui, c'est bien moi."],
    },
    (8, 3): {
        "ok": ["Le prélèvement se fera à la date du {jour_prelevement} de chaque mois, avec une périodicité mensuelle."],
        "partial": ["Le prélèvement se fera à une date en début de mois, je crois."],
    },
    (9, 1): {
        "ok": ["Vos données personnelles sont traitées uniquement pour la gestion de votre contrat, c'est leur seule finalité."],
        "partial": ["Vos données personnelles servent à la gestion, je crois."],
    },
    (9, 2): {
        "ok": ["Conformément au RGPD, vous disposez de droits d'accès, de rectification et d'opposition sur vos données."],
        "partial": ["Pour vos droits d'accès, normalement c'est expliqué sur le site, c'est le RGPD."],
    },
    (10, 1): {
        "ok": ["Je vous fais un petit récapitulatif de votre souscription."],
        "partial": ["Pour le récapitulatif, vous verrez tout par écrit, normalement."],
    },
    (10, 2): {
        "ok": ["Je vous laisse les coordonnées de notre service client : le {service_tel}."],
        "partial": ["Pour le service, je pense que vous avez déjà nos coordonnées."],
        "reply": ["Merci, je note.", "Parfait, merci beaucoup."],
    },
}

CLIENT_REPLIES = [
    "Oui.", "D'accord.", "Très bien.", "Oui, je vous écoute.", "Entendu.", "Oui, allez-y.", "Parfait.",
    "Oui, c'est clair.", "Ah oui, d'accord.", "Ça me convient.", "Hum, oui.", "Oui oui, je comprends.",
]
ADVISOR_PREFIXES = ["", "", "", "", "", "Très bien.", "Parfait.", "Alors.", "Bien.", "Merci."]
ADVISOR_FILLERS = [
    "Très bien, je note.", "Parfait, merci pour ces précisions.", "On continue si vous le voulez bien.",
    "Je prends note, passons à la suite.", "D'accord, c'est noté.", "Excellent, on avance.",
    "Vous m'entendez bien ?", "Je regarde dans mon outil, un instant s'il vous plaît.",
    "Je reviens vers vous dans une seconde.", "Merci pour votre patience.",
]
CLIENT_FILLERS = ["Oui, pas de souci.", "Je vous entends bien.", "Je patiente.", "Oui, je suis toujours là.", "D'accord, allez-y."]
OPENINGS_FIRST = ["Bonjour {client_civ}, vous allez bien ?", "Bonjour {client_civ}, je vous rappelle comme convenu."]
OPENINGS_NEXT = [
    "Rebonjour {client_civ}, on reprend là où nous nous étions arrêtés.",
    "Bonjour {client_civ}, c'est encore {prenom_conseiller}, on continue notre échange.",
]
CLIENT_OPENINGS = ["Oui, bonjour.", "Bonjour, oui, c'est moi.", "Oui, je vous écoute."]
CLOSINGS_LAST = ["Je vous remercie pour votre confiance, excellente journée.", "Merci à vous et à bientôt."]
CLOSINGS_MID = ["Je vous rappelle un peu plus tard pour la suite, à tout à l'heure.", "On se reparle tout à l'heure, merci."]
CLIENT_CLOSINGS = ["Merci, au revoir.", "Au revoir, bonne journée."]
AUDIO_EVENTS = ["(rires)", "(toux)", "(bruit de fond)"]

#: Client sentences carrying personal data, appended to the client's reply to a control point (when
#: that point is said and the fiche's coin says so); neutral for every control point's terms.
PII_SENTENCES: dict[tuple[int, int], tuple[str, str]] = {
    (5, 1): ("carte", "Pour le premier mois, je peux aussi régler par carte, c'est la {carte_parle}."),
    (7, 1): ("nir", "Ma carte Vitale, c'est le {nir_parle}."),
    (7, 2): ("email", "Mon adresse e-mail, c'est {email}."),
    (10, 2): ("mobile", "Au cas où, mon portable c'est le {mobile_parle}."),
}
PII_SHARE = 0.6

STATUS_KEY = {"PRESENT": "ok", "PARTIEL": "partial"}
QUALITY_PROFILES = {"bon": (0.92, 0.05), "moyen": (0.72, 0.14), "faible": (0.48, 0.22)}
MIN_TURNS_PER_RECORDING = 24


# ---------------------------------------------------------------------------------------------
# Fiche base data
# ---------------------------------------------------------------------------------------------


def _price_str(value: float) -> str:
    return f"{value:.2f}".replace(".", ",")


def _fr_date(d: date) -> str:
    return d.strftime("%d/%m/%Y")


def _ascii(s: str) -> str:
    import unicodedata

    return "".join(c for c in unicodedata.normalize("NFD", s) if not unicodedata.combining(c)).lower().replace(" ", "")


@functools.lru_cache(maxsize=4096)
def _base(fiche_id: str) -> dict[str, Any]:
    parsed = parse_fiche_id(fiche_id)
    if parsed is None:
        raise ValueError(f"not a sample fiche id: {fiche_id!r}")
    day, index = parsed
    rng = _rng("fiche", fiche_id)
    female = rng.random() < 0.55
    prenom = rng.choice(PRENOMS_F if female else PRENOMS_H)
    nom = rng.choice(NOMS)
    age = rng.randint(24, 82)
    birth = date(day.year - age, rng.randint(1, 12), rng.randint(1, 28))
    cp, ville = rng.choice(VILLES)
    mobile_digits = f"6{rng.randint(10_000_000, 99_999_999)}"
    groupe_id, groupe = rng.choice(GROUPES)
    advisor = rng.choice([u for u in USERS if u["groupe_id"] == groupe_id])
    gamme = rng.choice(GAMMES)
    f_idx = rng.randrange(len(gamme["formules"]))
    price = round(gamme["base"] * (1 + 0.32 * f_idx) * (0.8 + age / 60.0) + rng.randint(0, 99) / 100.0, 2)
    effet = date(day.year + (day.month // 12), day.month % 12 + 1, 1)
    situation = rng.choice(SITUATIONS)
    regime = rng.choice(REGIMES[:3] if age < 62 else [REGIMES[2]])
    n_enfants = rng.choice([0, 0, 1, 2, 3]) if age < 60 else 0
    has_conjoint = situation[0] in (2, 3)
    iban = _valid_iban("".join(str(rng.randint(1000, 9999)) for _ in range(5)) + str(rng.randint(100, 999)))
    insert_time = time(8, rng.randint(0, 29))
    return {
        "fiche_id": fiche_id,
        "day": day,
        "index": index,
        "cle": f"cle-{_digest('cle', fiche_id)[:16]}",
        "female": female,
        "civilite": 2 if female else 1,
        "civilite_text": "Madame" if female else "Monsieur",
        "prenom": prenom,
        "nom": nom.upper(),
        "nom_display": nom,
        "birth": birth,
        "age": age,
        "cp": cp,
        "ville": ville,
        "adresse": f"{rng.randint(1, 180)} {rng.choice(RUES)}",
        "mobile": "0" + mobile_digits,
        "mobile_intl": "33" + mobile_digits,
        "email": f"{_ascii(prenom)}.{_ascii(nom)}{rng.randint(1, 99)}@example.invalid",
        "groupe_id": groupe_id,
        "groupe": groupe,
        "agence_id": advisor["agence_id"],
        "agence_nom": advisor["agence"],
        "advisor": advisor,
        "provenance": rng.choice(PROVENANCES),
        "gamme": gamme["nom"],
        "formule": gamme["formules"][f_idx],
        "formule_index": f_idx,
        "price": price,
        "date_effet": effet,
        "situation": situation,
        "regime": regime,
        "profession": rng.choice(PROFESSIONS),
        "n_enfants": n_enfants,
        "has_conjoint": has_conjoint,
        "ancien_assureur": rng.choice(ANCIENS_ASSUREURS),
        "deja_assure": rng.random() < 0.8,
        "iban": iban,
        "jour_prelevement": rng.choice([5, 10, 15]),
        "insert_dt": datetime.combine(day, insert_time, SAMPLE_TZ),
        "quality": rng.choices(list(QUALITY_PROFILES), weights=[0.45, 0.4, 0.15])[0],
        "n_recordings": _recordings_override(
            0 if rng.random() < 1 / 12 else rng.choices([1, 2, 3], weights=[0.45, 0.35, 0.2])[0]),
        "mail_devis_null": rng.random() < 0.15,
    }


def _recordings_override(drawn: int) -> int:
    """``drawn`` unless :data:`RECORDINGS_PER_FICHE_ENV` fixes the count (drawn anyway, so the rest
    of the fiche is the same random sequence either way)."""
    fixed = os.environ.get(RECORDINGS_PER_FICHE_ENV, "").strip()
    return int(fixed) if fixed else drawn


def _rib_key(bank: str, branch: str, account: str) -> str:
    """French RIB key: ``97 - (89 × bank + 15 × branch + 3 × account) mod 97`` (numeric account)."""
    return f"{97 - (89 * int(bank) + 15 * int(branch) + 3 * int(account)) % 97:02d}"


def _valid_iban(digits23: str) -> str:
    """A valid French IBAN, spoken grouped by four (``FR76 dddd … ddd``), from 23 drawn digits.

    The first 21 are bank (5), branch (5) and account (11); the last two are replaced by the RIB
    key. The check digits are then always ``76`` (a BBAN with a valid RIB key is ≡ 0 mod 97, so
    ``98 - (BBAN·10⁶ + 152700) mod 97 = 76``), computed anyway. Drawing the same 23 digits as the
    former random form keeps every later draw of the fiche — hence the whole data set — unchanged.
    """
    bban = digits23[:21] + _rib_key(digits23[:5], digits23[5:10], digits23[10:21])
    check = 98 - int(bban + "1527" + "00") % 97  # F=15, R=27
    iban = f"FR{check:02d}{bban}"
    return " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))


def _luhn_digit(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return str((10 - total % 10) % 10)


def _nir(b: dict[str, Any], rng: random.Random) -> str:
    """A NIR consistent with the fiche (sex, birth year and month, department of its postcode),
    spoken in its usual groups ``s yy mm dd ccc ooo kk``; key ``97 - n mod 97`` (2A/2B → 19/18)."""
    birth: date = b["birth"]
    dept = b["cp"][:2]
    if dept == "20":
        dept = "2A" if int(b["cp"]) < 20200 else "2B"
    body = f"{2 if b['female'] else 1}{birth.year % 100:02d}{birth.month:02d}{dept}{rng.randint(1, 999):03d}{rng.randint(1, 999):03d}"
    key = 97 - int(body.replace("2A", "19").replace("2B", "18")) % 97
    return f"{body[0]} {body[1:3]} {body[3:5]} {body[5:7]} {body[7:10]} {body[10:13]} {key:02d}"


@functools.lru_cache(maxsize=4096)
def _pii(fiche_id: str) -> dict[str, Any]:
    """Card, NIR and the spoken forms, from their own seed (the fiche's other draws are untouched),
    and which client sentences of :data:`PII_SENTENCES` this fiche's calls carry."""
    b = _base(fiche_id)
    rng = _rng("pii", fiche_id)
    card_body = "4" + "".join(str(rng.randint(0, 9)) for _ in range(14))
    card = card_body + _luhn_digit(card_body)
    mobile = b["mobile"]
    return {
        "carte_parle": " ".join(card[i : i + 4] for i in range(0, 16, 4)),
        "nir_parle": _nir(b, rng),
        "mobile_parle": " ".join(mobile[i : i + 2] for i in range(0, 10, 2)),
        "email": b["email"],
        "said": frozenset(kind for kind, _ in PII_SENTENCES.values() if rng.random() < PII_SHARE),
    }


def _context(b: dict[str, Any]) -> dict[str, str]:
    adv = b["advisor"]
    effet: date = b["date_effet"]
    return {
        "conseiller": f"{adv['prenom']} {adv['nom'].capitalize()}",
        "prenom_conseiller": adv["prenom"],
        "cabinet": CABINET,
        "orias": ORIAS,
        "client_civ": f"{b['civilite_text']} {b['nom_display']}",
        "gamme": b["gamme"],
        "formule": b["formule"],
        "prix": _price_str(b["price"]),
        "prix_arrondi": str(int(5 * round(b["price"] / 5))),
        "date_effet": f"{'1er' if effet.day == 1 else effet.day} {MOIS[effet.month - 1]} {effet.year}",
        "jour_prelevement": str(b["jour_prelevement"]),
        "service_tel": SERVICE_TEL,
        "ancien_assureur": b["ancien_assureur"],
        "iban_parle": b["iban"],
        "foyer": _foyer(b),
        **{k: v for k, v in _pii(b["fiche_id"]).items() if k != "said"},
    }


def _foyer(b: dict[str, Any]) -> str:
    kids = {0: "", 1: "un enfant", 2: "deux enfants", 3: "trois enfants"}[b["n_enfants"]]
    if b["has_conjoint"]:
        return f"Nous sommes en couple, avec {kids}." if kids else "Nous sommes deux, mon conjoint et moi."
    if b["n_enfants"] == 1:
        return "C'est pour moi et mon enfant."
    return f"C'est pour moi et mes {kids}." if kids else "C'est juste pour moi."


# ---------------------------------------------------------------------------------------------
# Conversation plan
# ---------------------------------------------------------------------------------------------


def _statuses(b: dict[str, Any]) -> dict[tuple[int, int], str]:
    rng = _rng("statuses", b["fiche_id"])
    p_present, p_partial = QUALITY_PROFILES[b["quality"]]
    out: dict[tuple[int, int], str] = {}
    for step in _checklist().steps:
        # Advisors are drilled on the critical mentions: they are missed less often.
        miss = (1.0 - p_present) / (2.5 if step.is_critical else 1.0)
        partial = p_partial * miss / (1.0 - p_present)
        for i, _ in enumerate(step.control_points, start=1):
            x = rng.random()
            out[(step.position, i)] = "PRESENT" if x < 1.0 - miss else "PARTIEL" if x < 1.0 - miss + partial else "ABSENT"
    return out


def _segments(n_rec: int, positions: list[int], rng: random.Random) -> list[list[int]]:
    if n_rec <= 0:
        return []
    cuts = sorted(rng.sample(range(1, len(positions)), n_rec - 1))
    bounds = [0, *cuts, len(positions)]
    return [positions[bounds[i] : bounds[i + 1]] for i in range(n_rec)]


@functools.lru_cache(maxsize=4096)
def _plan(fiche_id: str) -> dict[str, Any]:
    """Turns of every call, who says what, and which control point each advisor sentence covers."""
    b = _base(fiche_id)
    ctx = _context(b)
    statuses = _statuses(b)
    rng = _rng("plan", fiche_id)
    cfg = _checklist()
    positions = [s.position for s in cfg.steps]
    steps = {s.position: s for s in cfg.steps}
    recordings: list[dict[str, Any]] = []
    segments = _segments(b["n_recordings"], positions, rng)
    for r, seg in enumerate(segments):
        last = r == len(segments) - 1
        # A turn = (speaker, [sentences], control point | None, audio event | None)
        body: list[list[tuple[str, list[str], tuple[int, int] | None, str | None]]] = []
        for pos in seg:
            block: list[tuple[str, list[str], tuple[int, int] | None, str | None]] = []
            if rng.random() < 0.35:
                block.append((ADVISOR, [rng.choice(ADVISOR_FILLERS)], None, None))
                block.append((CLIENT, [rng.choice(CLIENT_FILLERS)], None, None))
            for i in range(1, len(steps[pos].control_points) + 1):
                statut = statuses[(pos, i)]
                script = SCRIPTS[(pos, i)]
                if statut == "ABSENT":
                    if rng.random() < 0.3:
                        block.append((ADVISOR, [rng.choice(ADVISOR_FILLERS)], None, None))
                        block.append((CLIENT, [rng.choice(CLIENT_REPLIES)], None, None))
                    continue
                sentence = rng.choice(script[STATUS_KEY[statut]]).format(**ctx)
                prefix = rng.choice(ADVISOR_PREFIXES)
                block.append((ADVISOR, [p for p in (prefix, sentence) if p], (pos, i), None))
                reply = rng.choice(script.get("reply") or CLIENT_REPLIES).format(**ctx)
                event = rng.choice(AUDIO_EVENTS) if rng.random() < 0.08 else None
                said = [reply]
                pii = PII_SENTENCES.get((pos, i))
                if pii is not None and pii[0] in _pii(fiche_id)["said"]:  # no draw from this rng
                    said.append(pii[1].format(**ctx))
                block.append((CLIENT, said, None, event))
            body.append(block)
        turns = [
            (ADVISOR, [rng.choice(OPENINGS_FIRST if r == 0 else OPENINGS_NEXT).format(**ctx)], None, None),
            (CLIENT, [rng.choice(CLIENT_OPENINGS)], None, None),
        ]
        n_body = sum(len(x) for x in body)
        while n_body + 4 < MIN_TURNS_PER_RECORDING:  # pad short calls with small talk between blocks
            at = rng.randrange(len(body) + 1)
            body.insert(at, [(ADVISOR, [rng.choice(ADVISOR_FILLERS)], None, None), (CLIENT, [rng.choice(CLIENT_FILLERS)], None, None)])
            n_body += 2
        for block in body:
            turns.extend(block)
        turns.append((ADVISOR, [rng.choice(CLOSINGS_LAST if last else CLOSINGS_MID)], None, None))
        turns.append((CLIENT, [rng.choice(CLIENT_CLOSINGS)], None, None))
        recordings.append({"steps": seg, "turns": turns})

    # Call times: all on the sale day, in order.
    start = datetime.combine(b["day"], time(8, 30), SAMPLE_TZ) + timedelta(minutes=rng.randint(5, 390))
    direction_out = rng.random() < 0.8
    for r, rec in enumerate(recordings):
        timed = _timed(fiche_id, r, rec["turns"])
        rec["duration_seconds"] = int(math.ceil(timed["end"])) + 1
        rec["start"] = start.replace(microsecond=rng.randint(0, 999_999))
        rec["direction"] = "out" if (direction_out or r > 0) else "in"
        start = rec["start"] + timedelta(seconds=rec["duration_seconds"], minutes=rng.randint(4, 75))
    return {"base": b, "statuses": statuses, "recordings": recordings}


def _timed(fiche_id: str, r: int, turns: list[tuple[str, list[str], Any, str | None]]) -> dict[str, Any]:
    """Word tokens with timings (ElevenLabs shape) and the position of every turn/sentence."""
    rng = _rng("timing", fiche_id, r)
    words: list[dict[str, Any]] = []
    t = round(rng.uniform(0.2, 0.9), 3)
    sentence_starts: list[list[float]] = []
    for speaker, sentences, _cp, event in turns:
        starts: list[float] = []
        t = round(t + rng.uniform(0.25, 1.0), 3)
        for sentence in sentences:
            for k, token in enumerate(sentence.split()):
                if words:
                    words.append(
                        {"text": " ", "start": words[-1]["end"], "end": t, "type": "spacing", "speaker_id": speaker, "logprob": 0.0}
                    )
                if k == 0:
                    starts.append(t)
                end = round(t + 0.1 + 0.045 * len(token) + rng.uniform(0.0, 0.08), 3)
                words.append(
                    {"text": token, "start": t, "end": end, "type": "word", "speaker_id": speaker, "logprob": round(-rng.uniform(0.0, 0.35), 4)}
                )
                t = round(end + rng.uniform(0.02, 0.09), 3)
        if event:
            words.append({"text": " ", "start": words[-1]["end"], "end": t, "type": "spacing", "speaker_id": speaker, "logprob": 0.0})
            end = round(t + rng.uniform(0.5, 1.5), 3)
            words.append({"text": event, "start": t, "end": end, "type": "audio_event", "speaker_id": speaker, "logprob": 0.0})
            t = end
        sentence_starts.append(starts)
    return {"words": words, "end": words[-1]["end"] if words else 0.0, "sentence_starts": sentence_starts}


# ---------------------------------------------------------------------------------------------
# Recordings, URLs, audio
# ---------------------------------------------------------------------------------------------


def _recording_uuid(fiche_id: str, r: int) -> str:
    day, index = parse_fiche_id(fiche_id)  # type: ignore[misc]
    h = _digest("uuid", fiche_id, r)
    return f"{day:%Y%m%d}-{index:04d}-4{r:03x}-{'89ab'[int(h[0], 16) % 4]}{h[1:4]}-{h[4:16]}"


def _call_id(fiche_id: str, r: int) -> str:
    return str(10**18 + int(_digest("call", fiche_id, r), 16) % (9 * 10**18))


def _advisor_number(b: dict[str, Any]) -> str:
    return f"3318460{int(b['advisor']['id']):04d}"


def recording_filename(fiche_id: str, r: int) -> str:
    plan = _plan(fiche_id)
    b = plan["base"]
    rec = plan["recordings"][r]
    st: datetime = rec["start"]
    adv, cli = _advisor_number(b), b["mobile_intl"]
    frm, to = (adv, cli) if rec["direction"] == "out" else (cli, adv)
    return f"{_recording_uuid(fiche_id, r)}-{st:%d-%m-%y}-{st:%H}h{st:%M}-{frm}-{to}.mp3"


def _signature(filename: str) -> str:
    return _digest("sig", filename)[:32]


def recording_url(fiche_id: str, r: int, base_url: str = DEFAULT_BASE_URL) -> str:
    name = recording_filename(fiche_id, r)
    return f"{base_url.rstrip('/')}/recordings/{name}?sig={_signature(name)}"


def verify_signature(filename: str, sig: str | None) -> bool:
    return bool(sig) and sig == _signature(filename)


def parse_recording_ref(url_or_filename: str) -> tuple[str, int] | None:
    """``(fiche_id, recording index)`` from a recording URL or file name; ``None`` if not ours."""
    name = urlsplit(str(url_or_filename or "")).path.rsplit("/", 1)[-1]
    name = name.split("?", 1)[0].split("#", 1)[0]
    m = _FILENAME.match(name)
    if not m:
        return None
    try:
        day = datetime.strptime(m.group("ymd"), "%Y%m%d").date()
        fiche_id = fiche_id_for(day, int(m.group("idx")))
        r = int(m.group("rec"), 16)
    except ValueError:
        return None
    if parse_fiche_id(fiche_id) is None or m.group("uuid").lower() != _recording_uuid(fiche_id, r):
        return None
    if r >= len(_plan(fiche_id)["recordings"]) or recording_filename(fiche_id, r).lower() != name.lower():
        return None
    return fiche_id, r


def _recording_object(fiche_id: str, r: int, base_url: str) -> dict[str, Any]:
    plan = _plan(fiche_id)
    b = plan["base"]
    rec = plan["recordings"][r]
    adv, cli = _advisor_number(b), b["mobile_intl"]
    frm, to = (adv, cli) if rec["direction"] == "out" else (cli, adv)
    return {
        "call_id": _call_id(fiche_id, r),
        "start_time": rec["start"].isoformat(timespec="microseconds"),
        "duration_seconds": rec["duration_seconds"],
        "direction": rec["direction"],
        "from_number": frm,
        "to_number": to,
        "answered": True,
        "recording_url": recording_url(fiche_id, r, base_url),
        "transcription": None,
    }


def recordings_for_fiche(fiche_id: str, base_url: str = DEFAULT_BASE_URL) -> list[dict[str, Any]]:
    """Gateway recording objects (spec 01 §1.4) of a fiche, oldest first."""
    if parse_fiche_id(fiche_id) is None:
        return []
    return [_recording_object(fiche_id, r, base_url) for r in range(len(_plan(fiche_id)["recordings"]))]


def audio_bytes_for_recording_url(url: str) -> bytes:
    """Small fake MP3 (ID3 header + marker with the file name + a few frame headers)."""
    ref = parse_recording_ref(url)
    if ref is None:
        raise KeyError("unknown sample recording")
    name = recording_filename(*ref).encode()
    tag = b"ID3\x04\x00\x00\x00\x00\x00\x00"
    frames = b"".join(b"\xff\xfb\x90\x64" + bytes(28) for _ in range(4 + int(_digest("audio", name)[:2], 16) % 8))
    return tag + AUDIO_MARKER + name + b"\n" + frames


def _filename_from_audio(data: bytes) -> str | None:
    at = data.find(AUDIO_MARKER)
    if at < 0:
        return None
    end = data.find(b"\n", at)
    if end < 0:
        return None
    try:
        return data[at + len(AUDIO_MARKER) : end].decode("ascii")
    except UnicodeDecodeError:
        return None


# ---------------------------------------------------------------------------------------------
# Transcripts (ElevenLabs speech-to-text response shape)
# ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=128)
def _transcript(fiche_id: str, r: int) -> dict[str, Any]:
    rec = _plan(fiche_id)["recordings"][r]
    timed = _timed(fiche_id, r, rec["turns"])
    words = timed["words"]
    return {
        "transcription_id": f"sample-{_digest('stt', fiche_id, r)[:20]}",
        "text": "".join(w["text"] for w in words),
        "language_code": "fra",
        "language_probability": round(0.97 + (int(_digest("lp", fiche_id, r)[:2], 16) % 30) / 1000.0, 3),
        "words": words,
    }


def transcript_for_recording_url(url: str) -> dict[str, Any]:
    """The ElevenLabs ``/v1/speech-to-text`` response for a sample recording URL (KeyError if unknown)."""
    ref = parse_recording_ref(url)
    if ref is None:
        raise KeyError("unknown sample recording")
    cached = _transcript(*ref)
    return {**cached, "words": [dict(w) for w in cached["words"]]}


def transcript_for_audio_bytes(data: bytes) -> dict[str, Any]:
    """Same as :func:`transcript_for_recording_url`, from :func:`audio_bytes_for_recording_url` bytes."""
    name = _filename_from_audio(bytes(data or b""))
    if name is None:
        raise KeyError("not a sample recording")
    return transcript_for_recording_url(name)


# ---------------------------------------------------------------------------------------------
# Fiche payloads
# ---------------------------------------------------------------------------------------------


def _sales_fiche(fiche_id: str, include_recordings: bool, base_url: str) -> dict[str, Any]:
    plan = _plan(fiche_id)
    b = plan["base"]
    rng = _rng("sales", fiche_id)
    modif = None
    if plan["recordings"] and rng.random() < 0.8:
        last = plan["recordings"][-1]
        modif = (last["start"] + timedelta(seconds=last["duration_seconds"], minutes=rng.randint(2, 30))).strftime("%d/%m/%Y %H:%M")
    return {
        "id": fiche_id,
        "cle": b["cle"],
        "nom": b["nom"],
        "prenom": b["prenom"],
        "telephone": b["mobile"],
        "telephone_2": None if rng.random() < 0.7 else f"0{rng.randint(100_000_000, 599_999_999)}",
        "email": b["email"],
        "statut": "Vente",
        "date_insertion": b["insert_dt"].strftime("%d/%m/%Y %H:%M"),
        "date_modification": modif,
        "recordings": recordings_for_fiche(fiche_id, base_url) if include_recordings else [],
    }


def fiches_for_day(
    day: date, count: int = DEFAULT_FICHES_PER_DAY, *, include_recordings: bool = True, base_url: str = DEFAULT_BASE_URL
) -> list[dict[str, Any]]:
    """The day's sold fiches as sales-list rows (spec 01 §1.3), ``count`` of them, by index."""
    count = max(0, min(int(count), MAX_FICHES_PER_DAY + 1))
    return [_sales_fiche(fiche_id_for(day, i), include_recordings, base_url) for i in range(count)]


def sales_list_payload(
    start: date,
    end: date,
    include_recordings: bool,
    *,
    base_url: str = DEFAULT_BASE_URL,
    fiches_per_day: int = DEFAULT_FICHES_PER_DAY,
) -> dict[str, Any]:
    """``{"fiches": [...], "total": n}`` for the inclusive window (ValueError past 366 days)."""
    if end < start:
        return {"fiches": [], "total": 0}
    span = (end - start).days + 1
    if span > MAX_RANGE_DAYS:
        raise ValueError(f"date range too large ({span} days, max {MAX_RANGE_DAYS})")
    fiches: list[dict[str, Any]] = []
    for k in range(span):
        fiches.extend(fiches_for_day(start + timedelta(days=k), fiches_per_day, include_recordings=include_recordings, base_url=base_url))
    return {"fiches": fiches, "total": len(fiches)}


def _is_known(fiche_id: str, fiches_per_day: int | None) -> bool:
    parsed = parse_fiche_id(fiche_id)
    if parsed is None:
        return False
    return fiches_per_day is None or parsed[1] < fiches_per_day


def _details(fiche_id: str, base_url: str) -> dict[str, Any]:
    plan = _plan(fiche_id)
    b = plan["base"]
    day: date = b["day"]
    adv = b["advisor"]
    rng = _rng("details", fiche_id)
    ins = b["insert_dt"]
    adv_name = f"{adv['prenom']} {adv['nom']}"
    etiquettes = [
        {"nom": nom, "date": (ins + timedelta(minutes=5 * k)).strftime("%d/%m/%Y %H:%M"), "style": style}
        for k, (nom, style) in enumerate([ETIQUETTES[0], *rng.sample(ETIQUETTES[1:], rng.randint(0, 3))])
    ]
    information = {
        "fiche_id": fiche_id,
        "cle": b["cle"],
        "date_insertion": ins.strftime("%d/%m/%Y %H:%M"),
        "createur": "Import web" if rng.random() < 0.6 else adv_name,
        "fiches_associees": None,
        "nombre_acces": rng.randint(1, 40),
        "dernier_acces": _fr_date(day) + " 18:05",
        "groupe": b["groupe"],
        "groupe_responsable": None,
        "groupe_gestion": "Gestion santé",
        "groupe_reclamation": None,
        "agence_id": b["agence_id"],
        "agence_nom": b["agence_nom"],
        "attribution_user_id": adv["id"],
        "attribution_user_nom": adv_name,
        "provenance_id": b["provenance"][0],
        "provenance_nom": b["provenance"][1],
        "provenance_numero": None,
        "provenance_periode_rappel": None,
        "origine_id": "2",
        "origine_nom": "Internet",
        "attribution_bis_user_id": None,
        "attribution_bis_user_nom": None,
        "refus_demarchage": False,
        "exception_demarchage": False,
        "exception_demarchage_commentaire": None,
        "niveau_interet": rng.randint(1, 5),
        "nombre_ouverture_mails": rng.randint(0, 6),
        "derniere_ouverture_mail": None,
        "nombre_visualisation_pages": rng.randint(0, 12),
        "derniere_visualisation_page": None,
        "espace_prospect_url": f"https://espace.auditflow-sample.invalid/p/{b['cle']}",
        "ferme_espace_prospect": False,
        "desinscription_mail": False,
        "corbeille": False,
        "archive": False,
        "modules": ["sante"] + (["prevoyance"] if rng.random() < 0.3 else []),
        "etiquettes": etiquettes,
    }
    prof, csp, csp_text = b["profession"]
    prospect = {
        "prospect_id": f"P{fiche_id[1:]}",
        "civilite": b["civilite"],
        "civilite_text": b["civilite_text"],
        "nom": b["nom"],
        "prenom": b["prenom"],
        "date_naissance": _fr_date(b["birth"]),
        "regime": str(b["regime"][0]),
        "regime_text": b["regime"][1],
        "telephone": None,
        "mobile": b["mobile"],
        "telephone_2": None,
        "mail": b["email"],
        "mail_2": None,
        "adresse": b["adresse"],
        "code_postal": b["cp"],
        "ville": b["ville"],
        "num_secu": f"{b['civilite']}{b['birth']:%y%m}{rng.randint(10, 95):02d}{rng.randint(100, 999)}{rng.randint(100, 999)}",
        "num_affiliation": None,
        "situation_familiale": b["situation"][0],
        "situation_familiale_text": b["situation"][1],
        "madelin": b["regime"][0] == 2,
        "profession": prof,
        "csp": csp,
        "csp_text": csp_text,
        "fax": None,
    }
    conjoint = None
    if b["has_conjoint"]:
        c_female = not b["female"]
        conjoint = {
            "conjoint_id": f"C{fiche_id[1:]}",
            "civilite": 2 if c_female else 1,
            "civilite_text": "Madame" if c_female else "Monsieur",
            "nom": b["nom"],
            "prenom": rng.choice(PRENOMS_F if c_female else PRENOMS_H),
            "date_naissance": _fr_date(date(b["birth"].year + rng.randint(-4, 4), rng.randint(1, 12), rng.randint(1, 28))),
            "regime": "1",
            "regime_text": REGIMES[0][1],
            "telephone": None,
            "mobile": None,
            "mail": None,
            "profession": None,
            "csp": None,
            "csp_text": None,
        }
    enfants = []
    for k in range(b["n_enfants"]):
        e_female = rng.random() < 0.5
        enfants.append(
            {
                "enfant_id": f"E{fiche_id[1:]}{k + 1}",
                "civilite": 2 if e_female else 1,
                "civilite_text": "Mademoiselle" if e_female else "Monsieur",
                "nom": b["nom"],
                "prenom": rng.choice(PRENOMS_F if e_female else PRENOMS_H),
                "date_naissance": _fr_date(date(day.year - rng.randint(1, 20), rng.randint(1, 12), rng.randint(1, 28))),
                "regime": "1",
                "regime_text": "Rattaché à un parent",
            }
        )
    mails = [
        {
            "date_envoi": (ins + timedelta(minutes=20)).strftime("%d/%m/%Y %H:%M"),
            "type_mail": "Devis",
            "utilisateur": adv_name,
            "visualisation_url": f"https://mail.auditflow-sample.invalid/v/{_digest('mail', fiche_id)[:12]}",
        }
    ]
    if rng.random() < 0.6:
        mails.append({"date_envoi": _fr_date(day) + " 19:00", "type_mail": "Bienvenue", "utilisateur": "Système", "visualisation_url": None})
    rendez_vous = [
        {
            "rdv_id": f"R{fiche_id[1:]}{k + 1}",
            "etiquette": "Rappel",
            "etiquette_color": "#f9a825",
            "utilisateur": adv_name,
            "date_debut": (ins + timedelta(hours=k + 1)).strftime("%d/%m/%Y %H:%M"),
            "date_fin": (ins + timedelta(hours=k + 1, minutes=30)).strftime("%d/%m/%Y %H:%M"),
            "commentaire": "Rappel pour finaliser la souscription",
            "statut": "Effectué",
        }
        for k in range(rng.randint(0, 2))
    ]
    commentaires = [
        {"commentaire_id": f"M{fiche_id[1:]}{k + 1}", "date": _fr_date(day) + f" {10 + k}:15", "utilisateur": adv_name, "texte": txt}
        for k, txt in enumerate(rng.sample(["Client intéressé par le dentaire.", "Souhaite être rappelé en fin de journée.", "Devis comparé avec l'offre actuelle.", "Dossier complet."], rng.randint(0, 3)))
    ]
    reclamations = []
    if rng.random() < 0.08:
        reclamations.append(
            {
                "reclamation_id": f"Q{fiche_id[1:]}",
                "date_creation": _fr_date(day + timedelta(days=2)),
                "assureur": b["gamme"],
                "type_reclamation": "Démarchage",
                "description": "Le client conteste la durée de l'appel.",
                "statut": "Ouverte",
                "date_traitement": None,
                "utilisateur_creation": "Service qualité",
                "utilisateur_traitement": None,
            }
        )
    autres_contrats = []
    if rng.random() < 0.25:
        autres_contrats.append(
            {
                "contrat_id": f"A{fiche_id[1:]}",
                "type_contrat": rng.choice(["Prévoyance", "Obsèques", "Assurance emprunteur"]),
                "assureur": rng.choice(ANCIENS_ASSUREURS),
                "numero_contrat": f"AC{rng.randint(100000, 999999)}",
                "date_souscription": _fr_date(date(day.year - rng.randint(1, 6), rng.randint(1, 12), 1)),
                "montant": _price_str(rng.uniform(8, 45)),
                "commentaire": None,
            }
        )
    doc_types = [("Devis", "devis.pdf"), ("DIPA", "dipa.pdf"), ("Bulletin d'adhésion", "bulletin.pdf"), ("RIB", "rib.pdf"), ("Conditions générales", "cg.pdf")]
    documents = [
        {
            "document_id": f"D{fiche_id[1:]}{k + 1}",
            "type": typ,
            "nom": name,
            "taille": f"{rng.randint(40, 900)} Ko",
            "date_creation": _fr_date(day) + f" {9 + k}:00",
            "selection_mail": k < 2,
            "partage_prospect": k < 3,
            "signer": typ == "Bulletin d'adhésion",
            "download_url": f"https://docs.auditflow-sample.invalid/{fiche_id}/{name}",
        }
        for k, (typ, name) in enumerate(doc_types[: rng.randint(1, len(doc_types))])
    ]
    alertes = []
    if rng.random() < 0.3:
        alertes.append(
            {
                "alerte_id": f"L{fiche_id[1:]}",
                "etat": rng.choice(["A traiter", "Traitée"]),
                "date": _fr_date(day),
                "etiquette": "Qualité",
                "libelle": "Vérifier la signature du bulletin",
                "deposee_le": _fr_date(day) + " 17:00",
                "deposee_par": adv_name,
                "commentaire": None,
                "attribuee_a": "Service qualité",
                "traitee_le": None,
                "traitee_par": None,
                "commentaire_traitement": None,
            }
        )
    effet = b["date_effet"]
    produit = {
        "date_effet": _fr_date(effet),
        "date_effet_modifiable": "oui",
        "formule": b["formule"],
        "groupe_nom": "Groupe Azur",
        "gamme_nom": b["gamme"],
        "formule_nom": b["formule"],
        "cotisation": _price_str(b["price"]),
        "type_contrat": "Individuel",
        "type_client": "Particulier",
        "logo_url": None,
        "garanties_url": f"https://docs.auditflow-sample.invalid/garanties/{_ascii(b['gamme'])}.pdf",
        "dipa_url": f"https://docs.auditflow-sample.invalid/dipa/{_ascii(b['gamme'])}.pdf",
        "conditions_generales_url": f"https://docs.auditflow-sample.invalid/cg/{_ascii(b['gamme'])}.pdf",
        "bulletin_adhesion_url": None,
        "devoir_conseil_url": None,
    }
    ancien = None
    if b["deja_assure"]:
        ancien = {
            "deja_assure": True,
            "plus_12_mois": rng.random() < 0.85,
            "ria_requested": rng.random() < 0.7,
            "assureur": b["ancien_assureur"],
            "code_assureur": f"{rng.randint(100, 999)}",
            "adresse": None,
            "code_postal": None,
            "ville": None,
            "date_souscription": _fr_date(date(day.year - rng.randint(1, 8), rng.randint(1, 12), 1)),
            "date_echeance": f"31/12/{day.year}",
            "num_contrat": f"OLD{rng.randint(10000, 99999)}",
            "formule": "Standard",
            "cotisation": _price_str(b["price"] * rng.uniform(0.9, 1.4)),
        }
    compte = {
        "account_id": f"B{fiche_id[1:]}",
        "titulaire_nom": b["nom"],
        "titulaire_prenom": b["prenom"],
        "titulaire_adresse": b["adresse"],
        "titulaire_cp": b["cp"],
        "titulaire_ville": b["ville"],
    }
    elements = {
        "souscription_id": f"S{fiche_id[1:]}",
        "date_souscription": _fr_date(day),
        "date_signature": _fr_date(day),
        "date_validation": None,
        "num_contrat": f"AZ{fiche_id[1:]}",
        "annulation_contrat": False,
        "type_vente": "Vente à distance",
        "vente_a_froid": "non",
        "vf_accept": None,
        "ancien_contrat": ancien,
        "produit": produit,
        "paiement": {
            "mode_paiement": "Prélèvement",
            "prelevement_le": str(b["jour_prelevement"]),
            "periodicite": "Mensuelle",
            "pas_coord_bancaires": False,
            "compte_prelevement": compte,
            "compte_virement": copy.deepcopy(compte) if rng.random() < 0.5 else None,
        },
        "questions_complementaires": {"Êtes-vous hospitalisé actuellement ?": "Non", "Bénéficiez-vous de la CSS ?": "Non"},
        "questions_conseil": {"Besoin prioritaire": rng.choice(["Dentaire", "Optique", "Hospitalisation"]), "Budget mensuel": f"{int(b['price']) + 10} €"},
        "raw_data": {"source": "auditflow-sample"},
    }
    tarification = []
    for g in GAMMES:
        base_price = g["base"] * (0.8 + b["age"] / 60.0)
        tarification.append(
            {
                "nom": f"Devis {g['nom']}",
                "gammes": [
                    {
                        "nom": g["nom"],
                        "logo_url": None,
                        "garanties_url": f"https://docs.auditflow-sample.invalid/garanties/{_ascii(g['nom'])}.pdf",
                        "conditions_generales_url": None,
                        "bulletin_adhesion_url": None,
                        "formules": [
                            {
                                "formule_id": f"{_ascii(g['nom'])}-{k + 1}",
                                "nom": f_nom,
                                "prix": _price_str(base_price * (1 + 0.32 * k)),
                                "details": {"hospitalisation": f"{100 + 50 * k} %", "dentaire": f"{100 + 50 * k} %", "optique": f"{100 + 75 * k} €"},
                            }
                            for k, f_nom in enumerate(g["formules"])
                        ],
                    }
                ],
            }
        )
    return {
        "success": True,
        "message": "OK",
        "information": information,
        "prospect": prospect,
        "conjoint": conjoint,
        "enfants": enfants,
        "mails": mails,
        "rendez_vous": rendez_vous,
        "commentaires": commentaires,
        "reclamations": reclamations,
        "autres_contrats": autres_contrats,
        "documents": documents,
        "alertes": alertes,
        "elements_souscription": elements,
        "tarification": tarification,
        "recordings": recordings_for_fiche(fiche_id, base_url),
        "raw_sections": {"Notes internes": "Fiche générée par AuditFlow (démo).", "Origine du lead": b["provenance"][1]},
    }


def _mail_devis(fiche_id: str) -> dict[str, Any] | None:
    plan = _plan(fiche_id)
    b = plan["base"]
    if b["mail_devis_null"]:
        return None
    adv = b["advisor"]
    ins = b["insert_dt"]
    return {
        "mail_devis": {
            "date_envoi": (ins + timedelta(minutes=20)).strftime("%d/%m/%Y %H:%M"),
            "type_mail": "Devis",
            "utilisateur": f"{adv['prenom']} {adv['nom']}",
            "visualisation_url": f"https://mail.auditflow-sample.invalid/v/{_digest('mail', fiche_id)[:12]}",
        },
        "customer_info": {"email": b["email"], "phone": b["mobile"], "name": f"{b['prenom']} {b['nom']}"},
        "garanties_link": {"url": f"https://devis.auditflow-sample.invalid/{b['cle']}", "text": "Voir mes garanties"},
        "garanties_details": {
            "gamme": b["gamme"],
            "product_name": f"{b['gamme']} {b['formule']}",
            "formule": b["formule"],
            "price": _price_str(b["price"]) + " €",
            "age_range": f"{b['age'] // 10 * 10}-{b['age'] // 10 * 10 + 9} ans",
            "subscription_link": f"https://devis.auditflow-sample.invalid/{b['cle']}/souscrire",
            "agence_info": {"nom": b["agence_nom"], "adresse": None, "telephone": SERVICE_TEL.replace(" ", ""), "email": "contact@auditflow-sample.invalid", "logo_url": None},
            "fiche_info": {"fiche_id": fiche_id, "cle": b["cle"], "conseiller": f"{adv['prenom']} {adv['nom']}"},
            "subscriber_info": {"civilite": b["civilite_text"], "nom": b["nom"], "prenom": b["prenom"]},
            "documents": {
                "conditions_generales": "https://docs.auditflow-sample.invalid/cg.pdf",
                "tableau_garanties": "https://docs.auditflow-sample.invalid/tableau.pdf",
                "document_information": "https://docs.auditflow-sample.invalid/dipa.pdf",
                "exemples_remboursements": None,
            },
            "menu_links": {"home": "https://devis.auditflow-sample.invalid/", "garanties": None, "documents": None, "subscription": None},
            "garanties": {
                "hospitalisation": {
                    "category_name": "Hospitalisation",
                    "note_references": ["1"],
                    "items": [{"name": "Frais de séjour", "value": "100 %", "note_ref": "1"}, {"name": "Forfait journalier", "value": "Frais réels", "note_ref": None}],
                    "subcategories": {"chambre": {"name": "Chambre particulière", "items": [{"name": "Par nuit", "value": "50 €", "note_ref": None}]}},
                },
                "dentaire": {
                    "category_name": "Dentaire",
                    "note_references": [],
                    "items": [{"name": "Soins", "value": "100 %", "note_ref": None}],
                    "subcategories": {"prothèses": [{"name": "Couronne", "value": "200 %", "note_ref": "2"}]},
                },
            },
            "notes": [{"number": "1", "text": "Dans la limite des frais réels."}, {"number": "2", "text": "Base de remboursement de la Sécurité sociale."}],
        },
    }


def fiche_details_payload(
    fiche_id: str,
    include_mail_devis: bool = False,
    *,
    include_recordings: bool = True,
    base_url: str = DEFAULT_BASE_URL,
    fiches_per_day: int | None = DEFAULT_FICHES_PER_DAY,
) -> dict[str, Any] | None:
    """``by-id`` body (spec 01 §1.5), or ``None`` for an unknown fiche (→ 404).

    ``fiches_per_day=None`` accepts any decodable index (0..999).
    """
    fid = str(fiche_id or "").strip()
    if not _is_known(fid, fiches_per_day):
        return None
    body = _details(fid, base_url)
    if not include_recordings:
        body["recordings"] = []
    if include_mail_devis:
        body["mail_devis"] = _mail_devis(fid)
    return body


# ---------------------------------------------------------------------------------------------
# Ground truth and expected audit
# ---------------------------------------------------------------------------------------------


def personal_data(fiche_id: str) -> dict[str, Any] | None:
    """The personal data of a fiche's calls, as said or stored, and which of it the calls say.

    ``{"iban", "carte", "nir", "mobile", "email"}`` are the values in their spoken form (a test
    also compares them with spaces removed); ``"phones"`` are every phone number of the calls: the
    client's mobile (national and ``33…`` forms, the latter in the recordings' ``from``/``to`` and
    file names), the advisor's line and the service client number the advisor gives. ``"said"`` is
    the set of keys among ``iban``, ``carte``, ``nir``, ``mobile``, ``email``, ``service_tel`` whose
    value some call of the fiche says. ``None`` for an unknown fiche id.
    """
    if parse_fiche_id(str(fiche_id or "").strip()) is None:
        return None
    fid = str(fiche_id).strip()
    plan = _plan(fid)
    b = plan["base"]
    pii = _pii(fid)
    values = {"iban": b["iban"], "carte": pii["carte_parle"], "nir": pii["nir_parle"],
              "mobile": pii["mobile_parle"], "email": b["email"], "service_tel": SERVICE_TEL}
    spoken = " ".join(" ".join(sentences) for rec in plan["recordings"] for _, sentences, _, _ in rec["turns"])
    return {
        **{k: v for k, v in values.items() if k != "service_tel"},
        "phones": [b["mobile"], b["mobile_intl"], _advisor_number(b), SERVICE_TEL],
        "said": {k for k, v in values.items() if v in spoken},
    }


def ground_truth(fiche_id: str) -> dict[tuple[int, int], dict[str, Any]] | None:
    """Expected statut of every control point of ``checklist.json`` and where it was said.

    Keys are ``(step position, control point index)`` (both 1-based). Values:
    ``{"statut": "PRESENT"|"PARTIEL"|"ABSENT", "recording_index", "call_id", "chunk_index",
    "message_index", "start" (seconds), "speaker", "text"}`` — location fields are ``None`` for ABSENT.
    ``recording_index``/``chunk_index`` are 0-based timeline coordinates when every recording of
    the fiche is transcribed. ``None`` for an unknown fiche id.
    """
    if parse_fiche_id(str(fiche_id or "").strip()) is None:
        return None
    fid = str(fiche_id).strip()
    plan = _plan(fid)
    out: dict[tuple[int, int], dict[str, Any]] = {
        key: {
            "statut": "ABSENT",
            "recording_index": None,
            "call_id": None,
            "chunk_index": None,
            "message_index": None,
            "start": None,
            "speaker": None,
            "text": None,
        }
        for key in plan["statuses"]
    }
    for r, rec in enumerate(plan["recordings"]):
        timed = _timed(fid, r, rec["turns"])
        for m, (speaker, sentences, cp, _event) in enumerate(rec["turns"]):
            if cp is None:
                continue
            out[cp] = {
                "statut": plan["statuses"][cp],
                "recording_index": r,
                "call_id": _call_id(fid, r),
                "chunk_index": m // CHUNK_SIZE,
                "message_index": m,
                "start": timed["sentence_starts"][m][-1],
                "speaker": speaker,
                "text": " ".join(sentences[-1].split()),
            }
    return out


def expected_audit(fiche_id: str) -> dict[str, Any] | None:
    """Expected step results and compliance of the bundled checklist for this fiche.

    ``None`` for an unknown fiche id. A fiche without recordings cannot be audited (empty timeline):
    ``auditable`` is ``False`` and ``compliance`` ``None``. Steps: ``{position, name, weight,
    is_critical, statuts, ratio, score, conforme, niveau_conformite}`` with score =
    ``derived_step_score(step_ratio(statuts), weight)`` and conforme = ``verdict_for_ratio``.
    """
    from auditflow_dagster.core.scoring import (
        StepScoreInput,
        compute_compliance,
        derived_step_score,
        niveau_for,
        step_ratio,
        verdict_for_ratio,
    )

    truth = ground_truth(fiche_id)
    if truth is None:
        return None
    fid = str(fiche_id).strip()
    cfg = _checklist()
    steps: list[dict[str, Any]] = []
    for step in cfg.steps:
        statuts = [truth[(step.position, i)]["statut"] for i in range(1, len(step.control_points) + 1)]
        ratio = step_ratio(statuts)
        conforme = verdict_for_ratio(ratio)
        steps.append(
            {
                "position": step.position,
                "name": step.name,
                "weight": step.weight,
                "is_critical": step.is_critical,
                "statuts": statuts,
                "ratio": ratio,
                "score": derived_step_score(ratio, step.weight),
                "conforme": conforme,
                "niveau_conformite": niveau_for(conforme, ratio),
            }
        )
    auditable = bool(_plan(fid)["recordings"])
    compliance = None
    if auditable:
        compliance = compute_compliance(
            [
                StepScoreInput(
                    position=s["position"], weight=s["weight"], is_critical=s["is_critical"], score=s["score"], conforme=s["conforme"]
                )
                for s in steps
            ]
        )
    return {"fiche_id": fid, "auditable": auditable, "steps": steps, "compliance": compliance}
