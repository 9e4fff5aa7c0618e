"""core.fiche_sections: payload ⇄ rows is lossless up to the documented canonicalizations (C1–C5).

The payload strategies below are written from spec 01 §1.5 (not from the module's field lists), so
a key the module forgot would still round-trip (through ``extra``) but show up in
``test_generator_payloads_need_no_patch``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditflow_dagster.core import fiche_sections as fs
from auditflow_dagster.sample import generator

# ------------------------------------------------------------------------------------------------
# Strategies (spec 01 §1.5)
# ------------------------------------------------------------------------------------------------

CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
TEXT = st.text(alphabet=CHARS, max_size=10)
UNKNOWN_KEY = st.text(alphabet=CHARS, min_size=1, max_size=6).map(lambda s: "x_" + s)  # never a known key
FLOAT = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12)
SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-(2**40), 2**40), FLOAT, TEXT)
JSON = st.recursive(
    SCALAR, lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(TEXT, c, max_size=3)), max_leaves=5
)

KIND = {
    "text": st.one_of(st.none(), TEXT, TEXT, st.integers(-999, 999), FLOAT, st.booleans()),
    "int": st.one_of(st.none(), st.integers(-(2**31), 2**31 - 1), st.integers(2**31, 2**40), FLOAT,
                     st.integers(-999, 999).map(str), TEXT, st.booleans()),
    "bool": st.one_of(st.none(), st.booleans(), st.booleans(), st.integers(0, 1), TEXT),
    "texts": st.one_of(st.none(), st.lists(TEXT, max_size=3), st.lists(SCALAR, max_size=2)),
}


def obj(spec: str, **nested: st.SearchStrategy) -> st.SearchStrategy[dict[str, Any]]:
    """Every key of ``spec`` (``name[:kind]``) plus ``nested`` ones, plus 0–2 unknown keys."""
    fields = {}
    for tok in spec.split():
        name, _, kind = tok.partition(":")
        fields[name] = KIND[kind or "text"]
    fields.update(nested)
    return st.tuples(st.fixed_dictionaries(fields), st.dictionaries(UNKNOWN_KEY, JSON, max_size=2)).map(
        lambda t: {**t[0], **t[1]}
    )


def items(strategy: st.SearchStrategy, odd: bool = True) -> st.SearchStrategy[Any]:
    """A list section: usually objects, sometimes a stray non-object entry or a null list."""
    lists = st.lists(strategy, max_size=3)
    if not odd:
        return lists
    return st.one_of(lists, lists, lists, st.lists(st.one_of(strategy, SCALAR), max_size=3), st.none())


def nullable(strategy: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(st.none(), strategy, strategy)


ETIQUETTE = obj("nom date style")
INFORMATION = obj(
    "fiche_id cle date_insertion createur fiches_associees nombre_acces:int dernier_acces groupe groupe_responsable "
    "groupe_gestion groupe_reclamation agence_id agence_nom attribution_user_id attribution_user_nom provenance_id "
    "provenance_nom provenance_numero provenance_periode_rappel origine_id origine_nom attribution_bis_user_id "
    "attribution_bis_user_nom refus_demarchage:bool exception_demarchage:bool exception_demarchage_commentaire "
    "niveau_interet:int nombre_ouverture_mails:int derniere_ouverture_mail nombre_visualisation_pages:int "
    "derniere_visualisation_page espace_prospect_url ferme_espace_prospect:bool desinscription_mail:bool "
    "corbeille:bool archive:bool modules:texts",
    etiquettes=items(ETIQUETTE),
)
PROSPECT = obj(
    "prospect_id civilite:int civilite_text nom prenom date_naissance regime regime_text telephone mobile telephone_2 "
    "mail mail_2 adresse code_postal ville num_secu num_affiliation situation_familiale:int situation_familiale_text "
    "madelin:bool profession csp:int csp_text fax"
)
CONJOINT = obj(
    "conjoint_id civilite:int civilite_text nom prenom date_naissance regime regime_text telephone mobile mail "
    "profession csp:int csp_text"
)
ENFANT = obj("enfant_id civilite:int civilite_text nom prenom date_naissance regime regime_text")
MAIL = obj("date_envoi type_mail utilisateur visualisation_url")
RDV = obj("rdv_id etiquette etiquette_color utilisateur date_debut date_fin commentaire statut")
COMMENTAIRE = obj("commentaire_id date utilisateur texte")
RECLAMATION = obj(
    "reclamation_id date_creation assureur type_reclamation description statut date_traitement utilisateur_creation "
    "utilisateur_traitement"
)
AUTRE = obj("contrat_id type_contrat assureur numero_contrat date_souscription montant commentaire")
DOCUMENT = obj("document_id type nom taille date_creation selection_mail:bool partage_prospect:bool signer:bool download_url")
ALERTE = obj(
    "alerte_id etat date etiquette libelle deposee_le deposee_par commentaire attribuee_a traitee_le traitee_par "
    "commentaire_traitement"
)
ACCOUNT = obj("account_id titulaire_nom titulaire_prenom titulaire_adresse titulaire_cp titulaire_ville")
ELEMENTS = obj(
    "souscription_id date_souscription date_signature date_validation num_contrat annulation_contrat:bool type_vente "
    "vente_a_froid vf_accept",
    ancien_contrat=nullable(obj(
        "deja_assure:bool plus_12_mois:bool ria_requested:bool assureur code_assureur adresse code_postal ville "
        "date_souscription date_echeance num_contrat formule cotisation")),
    produit=nullable(obj(
        "date_effet date_effet_modifiable formule groupe_nom gamme_nom formule_nom cotisation type_contrat type_client "
        "logo_url garanties_url dipa_url conditions_generales_url bulletin_adhesion_url devoir_conseil_url")),
    paiement=nullable(obj("mode_paiement prelevement_le periodicite pas_coord_bancaires:bool",
                          compte_prelevement=nullable(ACCOUNT), compte_virement=nullable(ACCOUNT))),
    questions_complementaires=st.one_of(st.dictionaries(TEXT, TEXT, max_size=3), st.dictionaries(TEXT, JSON, max_size=2), st.none()),
    questions_conseil=st.one_of(st.dictionaries(TEXT, TEXT, max_size=3), st.none()),
    raw_data=st.one_of(st.dictionaries(TEXT, JSON, max_size=3), st.none()),
)
FORMULE = obj("formule_id nom prix", details=st.one_of(
    st.dictionaries(TEXT, TEXT, max_size=4), st.dictionaries(TEXT, st.one_of(TEXT, SCALAR), max_size=3), st.none()))
GAMME = obj("nom logo_url garanties_url conditions_generales_url bulletin_adhesion_url", formules=items(FORMULE))
TARIFICATION = obj("nom", gammes=items(GAMME))
GARANTIE_ITEM = obj("name value note_ref")
NAMED_SUB = obj("name", items=items(GARANTIE_ITEM))
CATEGORY = obj(
    "category_name",
    note_references=st.one_of(st.lists(TEXT, max_size=3), st.lists(SCALAR, max_size=2)),
    items=items(GARANTIE_ITEM),
    subcategories=st.one_of(
        st.dictionaries(TEXT, NAMED_SUB, max_size=3),                               # "named"
        st.dictionaries(TEXT, st.lists(GARANTIE_ITEM, max_size=3), max_size=3),      # "array"
        st.dictionaries(TEXT, st.one_of(NAMED_SUB, st.lists(GARANTIE_ITEM, max_size=2), SCALAR), max_size=3),
        st.none(),
    ),
)
MAIL_DEVIS = obj(
    "",
    mail_devis=nullable(obj("date_envoi type_mail utilisateur visualisation_url")),
    customer_info=nullable(obj("email phone name")),
    garanties_link=nullable(obj("url text")),
    garanties_details=nullable(obj(
        "gamme product_name formule price age_range subscription_link",
        agence_info=nullable(obj("nom adresse telephone email logo_url")),
        fiche_info=nullable(obj("fiche_id cle conseiller")),
        subscriber_info=nullable(obj("civilite nom prenom")),
        documents=nullable(obj("conditions_generales tableau_garanties document_information exemples_remboursements")),
        menu_links=nullable(obj("home garanties documents subscription")),
        garanties=st.one_of(st.dictionaries(TEXT, CATEGORY, max_size=3), st.dictionaries(TEXT, st.one_of(CATEGORY, SCALAR), max_size=2)),
        notes=items(obj("number text")),
    )),
)


@st.composite
def payloads(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {
        "success": draw(st.booleans()),
        "message": draw(st.one_of(TEXT, st.none())),
        "information": draw(INFORMATION),
        "prospect": draw(nullable(PROSPECT)),
        "conjoint": draw(nullable(CONJOINT)),
        "enfants": draw(items(ENFANT)),
        "mails": draw(items(MAIL)),
        "rendez_vous": draw(items(RDV)),
        "commentaires": draw(items(COMMENTAIRE)),
        "reclamations": draw(items(RECLAMATION)),
        "autres_contrats": draw(items(AUTRE)),
        "documents": draw(items(DOCUMENT)),
        "alertes": draw(items(ALERTE)),
        "elements_souscription": draw(nullable(ELEMENTS)),
        "tarification": draw(items(TARIFICATION)),
        "recordings": [],
        "raw_sections": draw(st.one_of(st.dictionaries(TEXT, TEXT, max_size=3),
                                       st.dictionaries(TEXT, st.one_of(TEXT, SCALAR), max_size=3))),
    }
    if draw(st.booleans()):
        body["cle"] = draw(TEXT)
    md = draw(st.sampled_from(["absent", "null", "object"]))
    if md == "null":
        body["mail_devis"] = None
    elif md == "object":
        body["mail_devis"] = draw(MAIL_DEVIS)
    body.update(draw(st.dictionaries(UNKNOWN_KEY, JSON, max_size=2)))  # unknown top-level keys
    return body


# ------------------------------------------------------------------------------------------------
# The canonical form the rebuild is expected to produce (C2, C3 — the only ones the strategies hit)
# ------------------------------------------------------------------------------------------------


def canonical(payload: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in payload.items() if k != "recordings"}  # C3
    stored_cle = fs.coerce(payload.get("cle"), "text") or fs.coerce(payload["information"].get("cle"), "text")
    out.pop("cle", None)
    if stored_cle:  # C2
        out["cle"] = stored_cle
    out["success"] = payload["success"] if isinstance(payload["success"], bool) else True
    out["message"] = payload["message"] if isinstance(payload["message"], str) else "OK"
    return out


def round_trip(payload: dict[str, Any], fiche_id: str = "900000001") -> dict[str, Any]:
    n = fs.normalize_details(payload, fiche_id)
    return fs.rebuild_details({"fiche_id": fiche_id, **n["fiche"]}, n["sections"], include_mail_devis=True)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(payloads())
def test_rebuild_of_normalize_is_identity(payload):
    # fiche_id inside information may be anything; the rebuilt one comes from the row unless patched
    rebuilt = round_trip(payload)
    expected = canonical(payload)
    assert fs.json_equal(rebuilt, expected), _first_difference(expected, rebuilt)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(payloads())
def test_normalize_is_stable(payload):
    """normalize(rebuild(normalize(p))) == normalize(p): what renormalize relies on."""
    first = fs.normalize_details(payload, "900000001")
    again = fs.normalize_details(round_trip(payload), "900000001")
    assert fs.json_equal(first["sections"], again["sections"])
    assert fs.json_equal(first["fiche"]["raw_data"], again["fiche"]["raw_data"])


def _first_difference(a: Any, b: Any, path: str = "$") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in a.keys() | b.keys():
            if k not in a or k not in b:
                return f"{path}.{k}: only in {'expected' if k in a else 'rebuilt'}"
            if not fs.json_equal(a[k], b[k]):
                return _first_difference(a[k], b[k], f"{path}.{k}")
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if not fs.json_equal(x, y):
                return _first_difference(x, y, f"{path}[{i}]")
    return f"{path}: expected {a!r}, rebuilt {b!r}"


# ------------------------------------------------------------------------------------------------
# The rules, one by one
# ------------------------------------------------------------------------------------------------


def _day_payloads(include_mail_devis: bool = True) -> list[tuple[str, dict[str, Any]]]:
    day = dt.date(2026, 3, 10)
    return [(f["id"], generator.fiche_details_payload(f["id"], include_mail_devis)) for f in generator.fiches_for_day(day)]


def _walk_rows(tree: Any):
    if isinstance(tree, dict):
        if "extra" in tree:
            yield tree
        for v in tree.values():
            yield from _walk_rows(v)
    elif isinstance(tree, list):
        for v in tree:
            yield from _walk_rows(v)


def test_generator_payloads_need_no_patch():
    """Every key of a spec-shaped payload has a column: no extra, raw_data only the null marker."""
    seen_tables = set()
    for fiche_id, payload in _day_payloads():
        n = fs.normalize_details(payload, fiche_id)
        assert n["fiche"]["raw_data"] in ({}, {"mail_devis": None})
        assert (n["fiche"]["raw_data"] == {"mail_devis": None}) == (payload["mail_devis"] is None)
        assert all(r["extra"] == {} for r in _walk_rows(n["sections"])), fiche_id
        assert fs.json_equal(round_trip(payload, fiche_id), canonical(payload))

        def collect(table: str, rows: Any) -> None:
            for r in [rows] if isinstance(rows, dict) else rows or []:
                seen_tables.add(table)
                for ct, cr in (r.get("children") or {}).items():
                    collect(ct, cr)

        for t, rows in n["sections"].items():
            collect(t, rows)
    assert seen_tables == set(fs.FIELDS)  # a day of synthetic fiches exercises every table


def test_ints_are_truncated_in_columns_and_kept_exact_in_extra():
    payload = {"information": {"nombre_acces": 3.7, "niveau_interet": "4", "nombre_ouverture_mails": 2**40,
                               "nombre_visualisation_pages": True, "agence_id": 12, "groupe": "G"}}
    n = fs.normalize_details(payload, "1")
    info = n["sections"]["fiche_cache_information"]
    assert (info["nombre_acces"], info["niveau_interet"], info["nombre_ouverture_mails"]) == (3, 4, None)
    assert info["nombre_visualisation_pages"] is None and info["agence_id"] == "12"
    assert info["extra"] == {"nombre_acces": 3.7, "niveau_interet": "4", "nombre_ouverture_mails": 2**40,
                             "nombre_visualisation_pages": True, "agence_id": 12}
    rebuilt = round_trip(payload, "1")["information"]
    assert rebuilt["nombre_acces"] == 3.7 and rebuilt["agence_id"] == 12 and rebuilt["niveau_interet"] == "4"


def test_unknown_keys_go_to_extra_and_raw_data():
    payload = {"information": {"groupe": "G", "nouveau": {"a": 1}}, "documents": [{"document_id": "D1", "x": [1]}],
               "nouvelle_section": [1, 2], "raw_sections": {"a": "b", "n": 5}}
    n = fs.normalize_details(payload, "7")
    assert n["sections"]["fiche_cache_information"]["extra"] == {"nouveau": {"a": 1}}
    assert n["sections"]["fiche_cache_documents"][0]["extra"] == {"x": [1]}
    assert n["sections"]["fiche_cache_documents"][0]["row_index"] == 1
    assert n["fiche"]["raw_data"] == {"nouvelle_section": [1, 2], "raw_sections": {"n": 5}}
    assert round_trip(payload, "7")["raw_sections"] == {"a": "b", "n": 5}


def test_mail_devis_null_marker_and_absent_key():
    n = fs.normalize_details({"information": {}, "mail_devis": None}, "1")
    assert n["has_mail_devis"] and n["sections"]["fiche_cache_mail_devis"] is None
    assert n["fiche"]["raw_data"] == {"mail_devis": None}
    fiche = {"fiche_id": "1", **n["fiche"]}
    assert fs.rebuild_details(fiche, n["sections"], include_mail_devis=True)["mail_devis"] is None
    assert "mail_devis" not in fs.rebuild_details(fiche, n["sections"], include_mail_devis=False)
    n = fs.normalize_details({"information": {}}, "1")
    assert not n["has_mail_devis"] and "fiche_cache_mail_devis" not in n["sections"]
    assert "mail_devis" not in fs.rebuild_details({"fiche_id": "1", **n["fiche"]}, n["sections"], include_mail_devis=True)


def test_subcategories_format_and_key_order():
    _, payload = next((f, p) for f, p in _day_payloads() if p["mail_devis"])
    md = payload["mail_devis"]
    md["garanties_details"]["garanties"]["zeta"] = {"category_name": "Z", "note_references": [], "items": [],
                                                     "subcategories": {"b": {"items": []}, "a": {"name": 3, "items": []}}}
    n = fs.normalize_details(payload, "1")
    cats = {c["category_key"]: c for c in n["sections"]["fiche_cache_mail_devis"]["children"]["fiche_cache_mail_devis_garantie_categories"]}
    assert cats["hospitalisation"]["subcategories_format"] == "named"
    assert cats["dentaire"]["subcategories_format"] == "array"
    assert cats["zeta"]["subcategories_format"] == "named"
    subs = {s["sub_key"]: s for s in cats["zeta"]["children"]["fiche_cache_mail_devis_garantie_subcategories"]}
    assert subs["a"]["name"] is None and subs["a"]["extra"] == {"name": 3}  # name kept only if a string
    rebuilt = fs.rebuild_details({"fiche_id": "1", **n["fiche"]}, n["sections"], include_mail_devis=True)
    garanties = rebuilt["mail_devis"]["garanties_details"]["garanties"]
    assert list(garanties) == sorted(garanties)  # C4: key order
    assert garanties["dentaire"]["subcategories"] == md["garanties_details"]["garanties"]["dentaire"]["subcategories"]
    assert list(garanties["zeta"]["subcategories"]) == ["a", "b"]
    assert garanties["zeta"]["subcategories"]["b"] == {"name": "b", "items": []}  # C1: missing name → key
    assert garanties["zeta"]["subcategories"]["a"]["name"] == 3
    for t in rebuilt["tarification"]:
        for g in t["gammes"]:
            for f in g["formules"]:
                assert list(f["details"]) == sorted(f["details"])


def test_elements_presence_rules():
    es = {"souscription_id": "S", "ancien_contrat": {"assureur": "X"}, "produit": {"formule": None},
          "paiement": {"mode_paiement": "CB", "pas_coord_bancaires": True, "compte_prelevement": None,
                       "compte_virement": {"titulaire_nom": "N"}},
          "questions_complementaires": {"q": "r"}, "questions_conseil": None, "raw_data": {}}
    n = fs.normalize_details({"information": {}, "elements_souscription": es}, "1")
    row = n["sections"]["fiche_cache_elements_souscription"]
    assert row["ancien_assureur"] == "X" and row["ancien_deja_assure"] is None
    assert row["virement_titulaire_nom"] == "N" and row["paiement_pas_coord_bancaires"] is True
    # deja_assure null → the rule would drop ancien_contrat, an all-null produit would be dropped:
    # both are kept whole in extra; questions_conseil null is kept too.
    assert row["extra"] == {"ancien_contrat": {"assureur": "X"}, "produit": {"formule": None}, "questions_conseil": None}
    rebuilt = round_trip({"information": {}, "elements_souscription": es}, "1")["elements_souscription"]
    assert rebuilt["ancien_contrat"] == {"assureur": "X"} and rebuilt["produit"] == {"formule": None}
    assert rebuilt["questions_complementaires"] == {"q": "r"} and rebuilt["questions_conseil"] is None
    assert rebuilt["paiement"]["compte_prelevement"] is None
    assert rebuilt["paiement"]["compte_virement"]["titulaire_nom"] == "N"  # other keys: C1 (null)
    assert rebuilt["raw_data"] == {} and rebuilt["souscription_id"] == "S"
    # present per the rules: deja_assure set → ancien_contrat object; no payment → paiement null
    n = fs.normalize_details({"information": {}, "elements_souscription": {"ancien_contrat": {"deja_assure": False}}}, "1")
    assert n["sections"]["fiche_cache_elements_souscription"]["extra"] == {}
    rebuilt = fs.rebuild_details({"fiche_id": "1", **n["fiche"]}, n["sections"])["elements_souscription"]
    assert rebuilt["ancien_contrat"]["deja_assure"] is False and rebuilt["paiement"] is None and rebuilt["produit"] is None


def test_absent_known_keys_come_back_null():
    """C1: the only loss — a known key the CRM omitted is rebuilt with its default."""
    rebuilt = round_trip({"information": {"groupe": "G"}, "documents": [{"document_id": "D"}]}, "5")
    assert rebuilt["information"]["groupe"] == "G" and rebuilt["information"]["createur"] is None
    assert rebuilt["information"]["fiche_id"] == "5" and rebuilt["information"]["etiquettes"] == []
    assert rebuilt["documents"] == [{k: ("D" if k == "document_id" else None) for k in
                                     ("document_id", "type", "nom", "taille", "date_creation", "selection_mail",
                                      "partage_prospect", "signer", "download_url")}]
    assert rebuilt["conjoint"] is None and rebuilt["elements_souscription"] is None
    assert rebuilt["raw_sections"] == {} and rebuilt["tarification"] == [] and rebuilt["mails"] == []


def test_models_follow_the_field_lists():
    from auditflow_dagster.db.models import SECTION_MODELS

    assert set(SECTION_MODELS) == set(fs.FIELDS)
    for table, model in SECTION_MODELS.items():
        columns = {c.name: c for c in model.__table__.columns}
        for col, _, kind in fs.FIELDS[table]:
            assert col in columns, (table, col)
        assert "extra" in columns and columns["extra"].nullable is False, table
        parent, fk = fs.PARENT_FK[table]
        fk_col = columns[fk]
        assert [(f.column.table.name, f.ondelete) for f in fk_col.foreign_keys] == [(parent, "CASCADE")], table
        if table in fs.INDEX_COLUMN:
            idx = fs.INDEX_COLUMN[table]
            uniques = [tuple(c.name for c in u.columns) for u in model.__table__.constraints if u.__class__.__name__ == "UniqueConstraint"]
            assert (fk, idx) in uniques, table
