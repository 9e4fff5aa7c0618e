"""Full-details payload ⇄ normalized section rows (spec 01 §1.5, §2.2, §2.3, §2.5). Pure: no SQL.

``normalize_details(payload, fiche_id)`` turns a CRM ``by-id`` body into plain row dicts, one per
row of the ``fiche_cache_*`` section tables (children nested under ``"children"``), plus the
reduced ``raw_data`` remainder of ``fiche_cache``. ``rebuild_details(...)`` turns those rows back
into the CRM shape. The database layer only moves the dicts in and out of the tables.

Lossless by construction
------------------------
Every row has typed columns (for queries) and an ``extra`` JSON *patch*: after the columns of a
row are computed, the item is rebuilt from them and ``extra`` records what that rebuild misses —
keys without a column, values whose JSON type the column cannot hold exactly (``"3"`` in an int
column, ``12`` in a text column, ``3.7`` truncated to ``3``), nested objects the presence rules
would drop, non-object list entries. ``raw_data`` is the same patch at the top level (unknown
top-level keys, sections whose shape cannot be normalized, the ``mail_devis: null`` marker).
Patch semantics (``apply_patch``): a key whose patch value *and* rebuilt value are both objects is
merged recursively; any other patch value replaces the rebuilt one (``null`` included).

Documented canonicalizations (what ``rebuild(normalize(p))`` changes; nothing else):

C1  A *known* key the CRM omitted comes back with its default: ``null`` for scalars and objects,
    ``[]`` for lists, ``{}`` for maps (top-level sections as in §2.5: lists ``[]``, ``conjoint`` /
    ``elements_souscription`` ``null``, ``raw_sections`` ``{}``; ``questions_*`` / ``raw_data`` of
    elements ``{}``). A *named* mail-devis subcategory without a ``name`` key gets its key (§2.5).
    (Explicit ``null`` is kept: the patch records it.)
C2  Envelope: top-level ``cle`` is the stored cle (payload ``cle`` → ``information.cle`` → the
    row's previous cle), present when non-empty; ``success`` is the payload bool (else ``true``)
    and ``message`` the payload string (else ``"OK"``) — both only when ``information`` is stored.
C3  ``recordings`` are not part of the sections: the database layer rebuilds them from the
    recording rows (§2.5: enriched, newest first).
C4  Object key order: tarification ``details`` and mail-devis ``garanties``/``subcategories`` come
    back in key order (§2.5); everything else in upstream order — JSON equality ignores order.
C5  A top-level ``_salesListOnly`` key is reserved (it marks list-only rows) and is dropped.

Storage limits outside this module: PostgreSQL rejects NUL (``\\u0000``) in text and jsonb, and
jsonb prints numbers as ``numeric`` (a float written in exponent form ≥ 1e16, e.g. ``1e+20``,
reads back as an int).
"""

from __future__ import annotations

import copy
import math
from typing import Any

__all__ = [
    "CHILD_TABLES",
    "FIELDS",
    "LIST_SECTIONS",
    "MAIL_DEVIS_TABLES",
    "ONE_TO_ONE_SECTIONS",
    "PARENT_FK",
    "SECTION_TABLES",
    "apply_patch",
    "diff_patch",
    "json_equal",
    "normalize_details",
    "rebuild_details",
]

Field = tuple[str, tuple[str, ...], str]  # (column, path inside the item, kind)
INT32 = (-(2**31), 2**31 - 1)


def _flat(spec: str, prefix: str = "", path: tuple[str, ...] = ()) -> tuple[Field, ...]:
    """``"a b:int c:bool"`` → fields; ``prefix`` names columns of a nested object at ``path``."""
    out = []
    for tok in spec.split():
        name, _, kind = tok.partition(":")
        out.append((prefix + name, (*path, name), kind or "text"))
    return tuple(out)


# --------------------------------------------------------------------------------------------
# Field lists: one per table (column names = spec 01 §2.2). The models are built from these.
# --------------------------------------------------------------------------------------------

INFORMATION = _flat(
    "cle date_insertion createur fiches_associees nombre_acces:int dernier_acces groupe groupe_responsable "
    "groupe_gestion groupe_reclamation agence_id agence_nom attribution_user_id attribution_user_nom "
    "provenance_id provenance_nom provenance_numero provenance_periode_rappel origine_id origine_nom "
    "attribution_bis_user_id attribution_bis_user_nom refus_demarchage:bool exception_demarchage:bool "
    "exception_demarchage_commentaire niveau_interet:int nombre_ouverture_mails:int derniere_ouverture_mail "
    "nombre_visualisation_pages:int derniere_visualisation_page espace_prospect_url ferme_espace_prospect:bool "
    "desinscription_mail:bool corbeille:bool archive:bool modules:texts"
)
ETIQUETTE = _flat("nom date style")
PROSPECT = _flat(
    "prospect_id civilite:int civilite_text nom prenom date_naissance regime regime_text telephone mobile "
    "telephone_2 mail mail_2 adresse code_postal ville num_secu num_affiliation situation_familiale:int "
    "situation_familiale_text madelin:bool profession csp:int csp_text fax"
)
CONJOINT = _flat(
    "conjoint_id civilite:int civilite_text nom prenom date_naissance regime regime_text telephone mobile mail "
    "profession csp:int csp_text"
)
ENFANT = _flat("enfant_id civilite:int civilite_text nom prenom date_naissance regime regime_text")
MAIL = _flat("date_envoi type_mail utilisateur visualisation_url")
RENDEZ_VOUS = _flat("rdv_id etiquette etiquette_color utilisateur date_debut date_fin commentaire statut")
COMMENTAIRE = _flat("commentaire_id date utilisateur texte")
RECLAMATION = _flat(
    "reclamation_id date_creation assureur type_reclamation description statut date_traitement "
    "utilisateur_creation utilisateur_traitement"
)
AUTRE_CONTRAT = _flat("contrat_id type_contrat assureur numero_contrat date_souscription montant commentaire")
DOCUMENT = _flat(
    "document_id type nom taille date_creation selection_mail:bool partage_prospect:bool signer:bool download_url"
)
ALERTE = _flat(
    "alerte_id etat date etiquette libelle deposee_le deposee_par commentaire attribuee_a traitee_le traitee_par "
    "commentaire_traitement"
)
RAW_SECTION = (("section_key", (), "text"), ("section_value", (), "text"))

_ES_TOP = _flat(
    "souscription_id date_souscription date_signature date_validation num_contrat annulation_contrat:bool "
    "type_vente vente_a_froid vf_accept"
)
_ES_ANCIEN = _flat(
    "deja_assure:bool plus_12_mois:bool ria_requested:bool assureur code_assureur adresse code_postal ville "
    "date_souscription date_echeance num_contrat formule cotisation",
    "ancien_", ("ancien_contrat",),
)
_ES_PRODUIT = _flat(
    "date_effet date_effet_modifiable formule groupe_nom gamme_nom formule_nom cotisation type_contrat "
    "type_client logo_url garanties_url dipa_url conditions_generales_url bulletin_adhesion_url devoir_conseil_url",
    "produit_", ("produit",),
)
_ES_PAIEMENT = _flat(
    "mode_paiement prelevement_le periodicite pas_coord_bancaires:bool", "paiement_", ("paiement",)
)
_ACCOUNT = "account_id titulaire_nom titulaire_prenom titulaire_adresse titulaire_cp titulaire_ville"
_ES_PRELEVEMENT = _flat(_ACCOUNT, "prelevement_", ("paiement", "compte_prelevement"))
_ES_VIREMENT = _flat(_ACCOUNT, "virement_", ("paiement", "compte_virement"))
_ES_JSON = _flat("questions_complementaires:json questions_conseil:json raw_data:json")
ELEMENTS = _ES_TOP + _ES_ANCIEN + _ES_PRODUIT + _ES_PAIEMENT + _ES_PRELEVEMENT + _ES_VIREMENT + _ES_JSON

TARIFICATION = _flat("nom")
GAMME = _flat("nom logo_url garanties_url conditions_generales_url bulletin_adhesion_url")
FORMULE = _flat("formule_id nom prix")
FORMULE_DETAIL = (("detail_key", (), "text"), ("detail_value", (), "text"))

_MD_MAIL = _flat("date_envoi type_mail utilisateur visualisation_url", "", ("mail_devis",))
_MD_CUSTOMER = _flat("email phone name", "customer_", ("customer_info",))
_MD_LINK = _flat("url text", "garanties_link_", ("garanties_link",))
_MD_DETAILS = _flat(
    "gamme product_name formule price age_range subscription_link", "details_", ("garanties_details",)
)
_MD_AGENCE = _flat("nom adresse telephone email logo_url", "agence_", ("garanties_details", "agence_info"))
_MD_FICHE = _flat("fiche_id cle conseiller", "fiche_info_", ("garanties_details", "fiche_info"))
_MD_SUBSCRIBER = _flat("civilite nom prenom", "subscriber_", ("garanties_details", "subscriber_info"))
_MD_DOCS = _flat(
    "conditions_generales tableau_garanties document_information exemples_remboursements",
    "doc_", ("garanties_details", "documents"),
)
_MD_MENU = _flat("home garanties documents subscription", "menu_", ("garanties_details", "menu_links"))
MAIL_DEVIS = _MD_MAIL + _MD_CUSTOMER + _MD_LINK + _MD_DETAILS + _MD_AGENCE + _MD_FICHE + _MD_SUBSCRIBER + _MD_DOCS + _MD_MENU
CATEGORY = (("category_key", (), "text"), ("category_name", ("category_name",), "text"),
            ("subcategories_format", (), "text"))
NOTE_REF = (("note_reference", (), "text"),)
GARANTIE_ITEM = _flat("name value note_ref")
SUBCATEGORY = (("sub_key", (), "text"), ("name", ("name",), "text"))
NOTE = _flat("number text")

#: table → its section columns (besides id, parent FK, row index, extra, timestamps).
FIELDS: dict[str, tuple[Field, ...]] = {
    "fiche_cache_information": INFORMATION,
    "fiche_cache_etiquettes": ETIQUETTE,
    "fiche_cache_prospects": PROSPECT,
    "fiche_cache_conjoints": CONJOINT,
    "fiche_cache_enfants": ENFANT,
    "fiche_cache_mails": MAIL,
    "fiche_cache_rendez_vous": RENDEZ_VOUS,
    "fiche_cache_commentaires": COMMENTAIRE,
    "fiche_cache_reclamations": RECLAMATION,
    "fiche_cache_autres_contrats": AUTRE_CONTRAT,
    "fiche_cache_documents": DOCUMENT,
    "fiche_cache_alertes": ALERTE,
    "fiche_cache_raw_sections": RAW_SECTION,
    "fiche_cache_elements_souscription": ELEMENTS,
    "fiche_cache_tarifications": TARIFICATION,
    "fiche_cache_tarification_gammes": GAMME,
    "fiche_cache_tarification_formules": FORMULE,
    "fiche_cache_tarification_formule_details": FORMULE_DETAIL,
    "fiche_cache_mail_devis": MAIL_DEVIS,
    "fiche_cache_mail_devis_garantie_categories": CATEGORY,
    "fiche_cache_mail_devis_category_note_refs": NOTE_REF,
    "fiche_cache_mail_devis_category_items": GARANTIE_ITEM,
    "fiche_cache_mail_devis_garantie_subcategories": SUBCATEGORY,
    "fiche_cache_mail_devis_subcategory_items": GARANTIE_ITEM,
    "fiche_cache_mail_devis_notes": NOTE,
}

#: payload key → table, for the 1:1 sections (upsert, or delete when null).
ONE_TO_ONE_SECTIONS = {
    "information": "fiche_cache_information",
    "prospect": "fiche_cache_prospects",
    "conjoint": "fiche_cache_conjoints",
    "elements_souscription": "fiche_cache_elements_souscription",
}
#: payload key → table, for the list sections (delete all + insert). Etiquettes come from
#: ``information.etiquettes``; raw_sections is a ``{key: value}`` map.
LIST_SECTIONS = {
    "documents": "fiche_cache_documents",
    "commentaires": "fiche_cache_commentaires",
    "mails": "fiche_cache_mails",
    "rendez_vous": "fiche_cache_rendez_vous",
    "alertes": "fiche_cache_alertes",
    "enfants": "fiche_cache_enfants",
    "reclamations": "fiche_cache_reclamations",
    "autres_contrats": "fiche_cache_autres_contrats",
}
#: child table → (parent table, FK column).
PARENT_FK: dict[str, tuple[str, str]] = {
    **{t: ("fiche_cache", "fiche_cache_id") for t in (
        *ONE_TO_ONE_SECTIONS.values(), *LIST_SECTIONS.values(), "fiche_cache_etiquettes",
        "fiche_cache_raw_sections", "fiche_cache_tarifications", "fiche_cache_mail_devis")},
    "fiche_cache_tarification_gammes": ("fiche_cache_tarifications", "tarification_id"),
    "fiche_cache_tarification_formules": ("fiche_cache_tarification_gammes", "gamme_id"),
    "fiche_cache_tarification_formule_details": ("fiche_cache_tarification_formules", "formule_row_id"),
    "fiche_cache_mail_devis_garantie_categories": ("fiche_cache_mail_devis", "mail_devis_id"),
    "fiche_cache_mail_devis_notes": ("fiche_cache_mail_devis", "mail_devis_id"),
    "fiche_cache_mail_devis_category_note_refs": ("fiche_cache_mail_devis_garantie_categories", "category_id"),
    "fiche_cache_mail_devis_category_items": ("fiche_cache_mail_devis_garantie_categories", "category_id"),
    "fiche_cache_mail_devis_garantie_subcategories": ("fiche_cache_mail_devis_garantie_categories", "category_id"),
    "fiche_cache_mail_devis_subcategory_items": ("fiche_cache_mail_devis_garantie_subcategories", "subcategory_id"),
}
CHILD_TABLES: dict[str, list[str]] = {}
for _child, (_parent, _fk) in PARENT_FK.items():
    CHILD_TABLES.setdefault(_parent, []).append(_child)
#: tables written by a details write, first-level ones (children follow their parent).
SECTION_TABLES = [t for t, (p, _) in PARENT_FK.items() if p == "fiche_cache"]
MAIL_DEVIS_TABLES = ["fiche_cache_mail_devis", *(
    t for t in PARENT_FK if t.startswith("fiche_cache_mail_devis_"))]
#: the row-order column of each list table (1-based, upstream order).
INDEX_COLUMN: dict[str, str] = {
    "fiche_cache_etiquettes": "etiquette_index",
    **{t: "row_index" for t in (
        *LIST_SECTIONS.values(), "fiche_cache_tarifications", "fiche_cache_tarification_gammes",
        "fiche_cache_tarification_formules", "fiche_cache_mail_devis_category_note_refs",
        "fiche_cache_mail_devis_category_items", "fiche_cache_mail_devis_subcategory_items",
        "fiche_cache_mail_devis_notes")},
}

# --------------------------------------------------------------------------------------------
# JSON helpers: strict equality, patch, diff
# --------------------------------------------------------------------------------------------


def json_equal(a: Any, b: Any) -> bool:
    """Equality as JSON documents: ``1 != 1.0 != True``, object key order ignored."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(json_equal(v, b[k]) for k, v in a.items())
    if isinstance(a, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def diff_patch(original: dict[str, Any], rebuilt: dict[str, Any]) -> dict[str, Any]:
    """The patch that turns ``rebuilt`` back into ``original`` (keys only in ``rebuilt`` stay: C1)."""
    patch: dict[str, Any] = {}
    for k, v in original.items():
        if k not in rebuilt:
            patch[k] = copy.deepcopy(v)
            continue
        b = rebuilt[k]
        if _covers(v, b):
            continue
        if isinstance(v, dict) and isinstance(b, dict):
            sub = diff_patch(v, b)
            if sub:
                patch[k] = sub
        else:
            patch[k] = copy.deepcopy(v)
    return patch


def _covers(original: Any, rebuilt: Any) -> bool:
    """``rebuilt`` equals ``original`` up to C1 (extra keys of known-null defaults only)."""
    if isinstance(original, dict) and isinstance(rebuilt, dict):
        return not diff_patch(original, rebuilt)
    if isinstance(original, list) and isinstance(rebuilt, list):
        return len(original) == len(rebuilt) and all(_covers(x, y) for x, y in zip(original, rebuilt, strict=True))
    return json_equal(original, rebuilt)


def apply_patch(base: dict[str, Any], patch: dict[str, Any] | None) -> dict[str, Any]:
    out = dict(base)
    for k, v in (patch or {}).items():
        if isinstance(out.get(k), dict) and isinstance(v, dict):
            out[k] = apply_patch(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


# --------------------------------------------------------------------------------------------
# Column coercion
# --------------------------------------------------------------------------------------------


def _to_int(v: Any) -> int | None:
    """Ints are truncated toward zero (spec §2.2); out of int32 range → no column value."""
    if v is None or isinstance(v, bool):
        return None
    try:
        if isinstance(v, int):
            n = v
        elif isinstance(v, float):
            n = int(v) if math.isfinite(v) else None
        elif isinstance(v, str):
            f = float(v.strip())
            n = int(f) if math.isfinite(f) else None
        else:
            return None
    except (TypeError, ValueError, OverflowError):
        return None
    return n if n is not None and INT32[0] <= n <= INT32[1] else None


def coerce(v: Any, kind: str) -> Any:
    if v is None:
        return None
    if kind == "text":
        if isinstance(v, str):
            return v
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            return str(v)
        return None
    if kind == "int":
        return _to_int(v)
    if kind == "bool":
        return v if isinstance(v, bool) else None
    if kind == "texts":
        return list(v) if isinstance(v, list) and all(isinstance(x, str) for x in v) else None
    if kind == "json":
        return copy.deepcopy(v) if isinstance(v, dict) else None
    raise ValueError(f"unknown field kind {kind!r}")


def _get(item: Any, path: tuple[str, ...]) -> Any:
    for p in path:
        if not isinstance(item, dict):
            return None
        item = item.get(p)
    return item


def _columns(item: dict[str, Any], fields: tuple[Field, ...]) -> dict[str, Any]:
    return {col: coerce(_get(item, path), kind) for col, path, kind in fields if path}


def _group(row: dict[str, Any], fields: tuple[Field, ...]) -> dict[str, Any]:
    return {path[-1]: row.get(col) for col, path, _ in fields}


def _any(row: dict[str, Any], fields: tuple[Field, ...]) -> bool:
    return any(row.get(col) is not None for col, _, _ in fields)


def _finish(row: dict[str, Any], item: Any, rebuild: Any) -> dict[str, Any]:
    """Set ``row["extra"]`` to the patch between ``item`` and the row's own rebuild."""
    row["extra"] = {}
    row["extra"] = diff_patch(item, rebuild(row))
    return row


def _sorted_rows(rows: list[dict[str, Any]] | None, table: str) -> list[dict[str, Any]]:
    col = INDEX_COLUMN.get(table)
    rows = list(rows or [])
    return sorted(rows, key=lambda r: r.get(col) or 0) if col else rows


def _children(row: dict[str, Any], table: str) -> list[dict[str, Any]]:
    return _sorted_rows((row.get("children") or {}).get(table), table)


# --------------------------------------------------------------------------------------------
# Per-table normalize / rebuild
# --------------------------------------------------------------------------------------------


def _simple_rebuild(fields: tuple[Field, ...]):
    def rebuild(row: dict[str, Any]) -> dict[str, Any]:
        return apply_patch({path[-1]: row.get(col) for col, path, _ in fields if path}, row.get("extra"))

    return rebuild


def _simple_list(items: Any, table: str) -> list[dict[str, Any]]:
    """Dict entries → rows with a 1-based upstream index; other entries are left to the parent patch."""
    if not isinstance(items, list):
        return []
    fields, idx = FIELDS[table], INDEX_COLUMN[table]
    rb = _simple_rebuild(fields)
    return [
        _finish({idx: i, **_columns(it, fields)}, it, rb)
        for i, it in enumerate(items, start=1)
        if isinstance(it, dict)
    ]


def _rebuild_simple_list(rows: list[dict[str, Any]] | None, table: str) -> list[dict[str, Any]]:
    rb = _simple_rebuild(FIELDS[table])
    return [rb(r) for r in _sorted_rows(rows, table)]


# information (+ etiquettes as a sibling table) ------------------------------------------------


def _rebuild_information(row: dict[str, Any], fiche_id: str, etiquettes: list[dict[str, Any]]) -> dict[str, Any]:
    base = {"fiche_id": fiche_id, **{path[-1]: row.get(col) for col, path, _ in INFORMATION}}
    base["etiquettes"] = _rebuild_simple_list(etiquettes, "fiche_cache_etiquettes")
    return apply_patch(base, row.get("extra"))


# elements_souscription -----------------------------------------------------------------------


def _rebuild_elements(row: dict[str, Any]) -> dict[str, Any]:
    out = _group(row, _ES_TOP)
    out["ancien_contrat"] = _group(row, _ES_ANCIEN) if row.get("ancien_deja_assure") is not None else None
    out["produit"] = _group(row, _ES_PRODUIT) if _any(row, _ES_PRODUIT) else None
    if row.get("paiement_pas_coord_bancaires") is not None:
        paiement = _group(row, _ES_PAIEMENT)
        paiement["compte_prelevement"] = _group(row, _ES_PRELEVEMENT) if _any(row, _ES_PRELEVEMENT) else None
        paiement["compte_virement"] = _group(row, _ES_VIREMENT) if _any(row, _ES_VIREMENT) else None
        out["paiement"] = paiement
    else:
        out["paiement"] = None
    for col, _, _ in _ES_JSON:
        v = row.get(col)
        out[col] = copy.deepcopy(v) if isinstance(v, dict) else {}
    return apply_patch(out, row.get("extra"))


# tarification --------------------------------------------------------------------------------


def _normalize_tarification(items: Any) -> list[dict[str, Any]]:
    if not isinstance(items, list):
        return []
    rows = []
    for i, t in enumerate(items, start=1):
        if not isinstance(t, dict):
            continue
        gammes = []
        for j, g in enumerate(t.get("gammes") if isinstance(t.get("gammes"), list) else [], start=1):
            if not isinstance(g, dict):
                continue
            formules = []
            for k, f in enumerate(g.get("formules") if isinstance(g.get("formules"), list) else [], start=1):
                if not isinstance(f, dict):
                    continue
                details = f.get("details") if isinstance(f.get("details"), dict) else {}
                drows = [  # key order, as rebuilt (C4)
                    {"detail_key": dk, "detail_value": dv if isinstance(dv, str) else None, "extra": {}}
                    for dk, dv in sorted(details.items())
                ]
                frow = {"row_index": k, **_columns(f, FORMULE), "children": {"fiche_cache_tarification_formule_details": drows}}
                formules.append(_finish(frow, f, _rebuild_formule))
            grow = {"row_index": j, **_columns(g, GAMME), "children": {"fiche_cache_tarification_formules": formules}}
            gammes.append(_finish(grow, g, _rebuild_gamme))
        trow = {"row_index": i, **_columns(t, TARIFICATION), "children": {"fiche_cache_tarification_gammes": gammes}}
        rows.append(_finish(trow, t, _rebuild_tarification))
    return rows


def _rebuild_formule(row: dict[str, Any]) -> dict[str, Any]:
    out = _group(row, FORMULE)
    details = sorted(_children(row, "fiche_cache_tarification_formule_details"), key=lambda d: d["detail_key"])
    out["details"] = {d["detail_key"]: d.get("detail_value") for d in details}
    return apply_patch(out, row.get("extra"))


def _rebuild_gamme(row: dict[str, Any]) -> dict[str, Any]:
    out = _group(row, GAMME)
    out["formules"] = [_rebuild_formule(f) for f in _children(row, "fiche_cache_tarification_formules")]
    return apply_patch(out, row.get("extra"))


def _rebuild_tarification(row: dict[str, Any]) -> dict[str, Any]:
    out = _group(row, TARIFICATION)
    out["gammes"] = [_rebuild_gamme(g) for g in _children(row, "fiche_cache_tarification_gammes")]
    return apply_patch(out, row.get("extra"))


# mail_devis ------------------------------------------------------------------------------------


def _subcategories_format(subs: Any) -> str:
    """``array`` iff ≥ 1 subcategory and all values are lists; else ``named`` (spec §2.2)."""
    if isinstance(subs, dict) and subs and all(isinstance(v, list) for v in subs.values()):
        return "array"
    return "named"


def _normalize_category(key: str, cat: dict[str, Any]) -> dict[str, Any]:
    subs = cat.get("subcategories")
    fmt = _subcategories_format(subs)
    refs = cat.get("note_references") if isinstance(cat.get("note_references"), list) else []
    sub_rows = []
    for sk, sv in (sorted(subs.items()) if isinstance(subs, dict) else []):
        if fmt == "array":
            sub_rows.append({"sub_key": sk, "name": None, "extra": {},
                             "children": {"fiche_cache_mail_devis_subcategory_items": _simple_list(sv, "fiche_cache_mail_devis_subcategory_items")}})
        elif isinstance(sv, dict):
            srow = {"sub_key": sk, "name": sv.get("name") if isinstance(sv.get("name"), str) else None,
                    "children": {"fiche_cache_mail_devis_subcategory_items": _simple_list(sv.get("items"), "fiche_cache_mail_devis_subcategory_items")}}
            sub_rows.append(_finish(srow, sv, lambda r, fmt=fmt: _rebuild_subcategory(r, fmt)))
    row = {
        "category_key": key,
        "category_name": coerce(cat.get("category_name"), "text"),
        "subcategories_format": fmt,
        "children": {
            "fiche_cache_mail_devis_category_note_refs": [
                {"row_index": i, "note_reference": r if isinstance(r, str) else None, "extra": {}}
                for i, r in enumerate(refs, start=1)
            ],
            "fiche_cache_mail_devis_category_items": _simple_list(cat.get("items"), "fiche_cache_mail_devis_category_items"),
            "fiche_cache_mail_devis_garantie_subcategories": sub_rows,
        },
    }
    return _finish(row, cat, _rebuild_category)


def _rebuild_subcategory(row: dict[str, Any], fmt: str) -> Any:
    items = _rebuild_simple_list(_children(row, "fiche_cache_mail_devis_subcategory_items"),
                                 "fiche_cache_mail_devis_subcategory_items")
    if fmt == "array":
        return items
    name = row.get("name")
    out = {"name": name if name is not None else row["sub_key"], "items": items}
    return apply_patch(out, row.get("extra"))


def _rebuild_category(row: dict[str, Any]) -> dict[str, Any]:
    fmt = row.get("subcategories_format") or "named"
    subs = sorted(_children(row, "fiche_cache_mail_devis_garantie_subcategories"), key=lambda s: s["sub_key"])
    out = {
        "category_name": row.get("category_name"),
        "note_references": [r.get("note_reference") for r in _children(row, "fiche_cache_mail_devis_category_note_refs")],
        "items": _rebuild_simple_list(_children(row, "fiche_cache_mail_devis_category_items"),
                                      "fiche_cache_mail_devis_category_items"),
        "subcategories": {s["sub_key"]: _rebuild_subcategory(s, fmt) for s in subs},
    }
    return apply_patch(out, row.get("extra"))


def _normalize_mail_devis(md: dict[str, Any]) -> dict[str, Any]:
    details = md.get("garanties_details") if isinstance(md.get("garanties_details"), dict) else {}
    garanties = details.get("garanties") if isinstance(details.get("garanties"), dict) else {}
    row = {
        **_columns(md, MAIL_DEVIS),
        "children": {
            "fiche_cache_mail_devis_garantie_categories": [
                _normalize_category(k, c) for k, c in sorted(garanties.items()) if isinstance(c, dict)
            ],
            "fiche_cache_mail_devis_notes": _simple_list(details.get("notes"), "fiche_cache_mail_devis_notes"),
        },
    }
    return _finish(row, md, _rebuild_mail_devis)


def _opt_group(row: dict[str, Any], fields: tuple[Field, ...]) -> dict[str, Any] | None:
    """A mail-devis sub-object is present iff one of its leaves is not null (else ``null``, C1)."""
    return _group(row, fields) if _any(row, fields) else None


def _rebuild_mail_devis(row: dict[str, Any]) -> dict[str, Any]:
    cats = sorted(_children(row, "fiche_cache_mail_devis_garantie_categories"), key=lambda c: c["category_key"])
    details = _group(row, _MD_DETAILS)
    details.update({
        "agence_info": _opt_group(row, _MD_AGENCE),
        "fiche_info": _opt_group(row, _MD_FICHE),
        "subscriber_info": _opt_group(row, _MD_SUBSCRIBER),
        "documents": _opt_group(row, _MD_DOCS),
        "menu_links": _opt_group(row, _MD_MENU),
        "garanties": {c["category_key"]: _rebuild_category(c) for c in cats},
        "notes": _rebuild_simple_list(_children(row, "fiche_cache_mail_devis_notes"), "fiche_cache_mail_devis_notes"),
    })
    out = {
        "mail_devis": _opt_group(row, _MD_MAIL),
        "customer_info": _opt_group(row, _MD_CUSTOMER),
        "garanties_link": _opt_group(row, _MD_LINK),
        "garanties_details": details,
    }
    return apply_patch(out, row.get("extra"))


# --------------------------------------------------------------------------------------------
# Whole payload
# --------------------------------------------------------------------------------------------

#: top-level keys that are the envelope (stored as fiche_cache columns) or rebuilt from other rows.
ENVELOPE_KEYS = ("success", "message", "cle", "recordings")
_LIST_DEFAULTS = (*LIST_SECTIONS, "tarification")


def _text(v: Any) -> str | None:
    return coerce(v, "text")


def normalize_details(payload: dict[str, Any], fiche_id: str) -> dict[str, Any]:
    """A ``by-id`` body → ``{"fiche": {...fiche_cache columns}, "sections": {table: row|rows|None},
    "has_mail_devis": bool}``. ``sections["fiche_cache_mail_devis"]`` is present only when the
    payload has the ``mail_devis`` key (object → row, anything else → ``None`` = delete)."""
    info = payload.get("information") if isinstance(payload.get("information"), dict) else None
    sections: dict[str, Any] = {}
    etiquettes = _simple_list((info or {}).get("etiquettes"), "fiche_cache_etiquettes")
    sections["fiche_cache_etiquettes"] = etiquettes
    if info is not None:
        irow = _columns(info, INFORMATION)
        sections["fiche_cache_information"] = _finish(irow, info, lambda r: _rebuild_information(r, fiche_id, etiquettes))
    else:
        sections["fiche_cache_information"] = None
    for key, table, rebuild in (
        ("prospect", "fiche_cache_prospects", _simple_rebuild(PROSPECT)),
        ("conjoint", "fiche_cache_conjoints", _simple_rebuild(CONJOINT)),
        ("elements_souscription", "fiche_cache_elements_souscription", _rebuild_elements),
    ):
        v = payload.get(key)
        sections[table] = _finish(_columns(v, FIELDS[table]), v, rebuild) if isinstance(v, dict) else None
    for key, table in LIST_SECTIONS.items():
        sections[table] = _simple_list(payload.get(key), table)
    raw_sections = payload.get("raw_sections")
    sections["fiche_cache_raw_sections"] = [
        {"section_key": k, "section_value": v if isinstance(v, str) else None, "extra": {}}
        for k, v in (raw_sections.items() if isinstance(raw_sections, dict) else [])
    ]
    sections["fiche_cache_tarifications"] = _normalize_tarification(payload.get("tarification"))
    has_md = "mail_devis" in payload
    if has_md:
        md = payload["mail_devis"]
        sections["fiche_cache_mail_devis"] = _normalize_mail_devis(md) if isinstance(md, dict) else None

    body = {k: v for k, v in payload.items() if k not in ENVELOPE_KEYS and k != "_salesListOnly"}
    rebuilt = _rebuild_sections(sections, fiche_id, include_mail_devis=True)
    raw_data = diff_patch(body, rebuilt)

    prospect = payload.get("prospect") if isinstance(payload.get("prospect"), dict) else {}
    success = payload.get("success")
    message = payload.get("message")
    fiche = {
        "cle": _text(payload.get("cle")) or _text((info or {}).get("cle")) or None,
        "details_success": success if isinstance(success, bool) else True,
        "details_message": message if isinstance(message, str) else None,
        "groupe": _text((info or {}).get("groupe")),
        "agence_nom": _text((info or {}).get("agence_nom")),
        "prospect_nom": _text(prospect.get("nom")),
        "prospect_prenom": _text(prospect.get("prenom")),
        "prospect_email": _text(prospect.get("mail")),
        "prospect_tel": _text(prospect.get("telephone")) or _text(prospect.get("mobile")),
        "raw_data": raw_data,
    }
    return {"fiche": fiche, "sections": sections, "has_mail_devis": has_md}


def _rebuild_sections(sections: dict[str, Any], fiche_id: str, *, include_mail_devis: bool) -> dict[str, Any]:
    """The CRM-shaped sections from rows, without the envelope and without ``raw_data``."""
    out: dict[str, Any] = {}
    info = sections.get("fiche_cache_information")
    if info is not None:
        out["information"] = _rebuild_information(info, fiche_id, sections.get("fiche_cache_etiquettes") or [])
    p = sections.get("fiche_cache_prospects")
    out["prospect"] = _simple_rebuild(PROSPECT)(p) if p is not None else None
    c = sections.get("fiche_cache_conjoints")
    out["conjoint"] = _simple_rebuild(CONJOINT)(c) if c is not None else None
    for key, table in LIST_SECTIONS.items():
        out[key] = _rebuild_simple_list(sections.get(table), table)
    e = sections.get("fiche_cache_elements_souscription")
    out["elements_souscription"] = _rebuild_elements(e) if e is not None else None
    out["tarification"] = [_rebuild_tarification(t) for t in _sorted_rows(sections.get("fiche_cache_tarifications"), "fiche_cache_tarifications")]
    out["raw_sections"] = {r["section_key"]: r.get("section_value") for r in sections.get("fiche_cache_raw_sections") or []}
    md = sections.get("fiche_cache_mail_devis")
    if include_mail_devis and md is not None:
        out["mail_devis"] = _rebuild_mail_devis(md)
    return out


def rebuild_details(
    fiche: dict[str, Any], sections: dict[str, Any], *, include_mail_devis: bool = False
) -> dict[str, Any]:
    """Rows → CRM shape (spec §2.5), without ``recordings`` (the caller adds them, C3).

    ``fiche`` holds the ``fiche_cache`` columns ``fiche_id``, ``cle``, ``details_success``,
    ``details_message``, ``raw_data``. Without an information row (sales-list-only rows, not-found
    markers) no envelope is added and ``raw_data`` shows through.
    """
    raw = {k: v for k, v in (fiche.get("raw_data") or {}).items() if k != "_salesListOnly"}
    body = apply_patch(_rebuild_sections(sections, fiche["fiche_id"], include_mail_devis=include_mail_devis), raw)
    if not include_mail_devis:
        body.pop("mail_devis", None)
    out: dict[str, Any] = {}
    has_info = sections.get("fiche_cache_information") is not None
    if has_info:
        out["success"] = fiche.get("details_success") if fiche.get("details_success") is not None else True
        out["message"] = fiche.get("details_message") if fiche.get("details_message") is not None else "OK"
    if fiche.get("cle"):
        out["cle"] = fiche["cle"]
    elif "cle" in body:
        out["cle"] = body.pop("cle")
    out.update(body)
    return out
