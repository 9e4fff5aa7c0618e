"""Product context and verification variants A/B/C (spec 03 §3.3), and the pluggable lookup."""

from __future__ import annotations

from typing import Any

import pytest

from auditflow_dagster.core.audit_config import AuditStepSpec
from auditflow_dagster.core.product_context import (
    ProductInfo,
    find_product,
    no_product,
    product_context_block,
    resolve_lookup,
    verification_block,
)
from auditflow_dagster.core.prompts import build_step_prompt, build_tools_user_prompt
from auditflow_dagster.sample import generator

PRODUCT = ProductInfo(nom="Santé Sérénité", gamme="SER", formule="Confort 3",
                      garanties={"Hospitalisation": "200 % BR", "Audioprothèse": "non couvert"},
                      mentions_obligatoires=["Délai de carence de 3 mois en dentaire"],
                      vendu={"formule": "Confort 3", "cotisation": "84,20 €"})


def lookup_from_fiche(details: dict[str, Any]) -> ProductInfo | None:
    """A test lookup: the product named by the fiche's own subscription elements."""
    produit = ((details.get("elements_souscription") or {}).get("produit") or {})
    name = produit.get("produit_nom") or produit.get("nom") or produit.get("formule")
    return ProductInfo(nom=str(name or "Produit de la fiche"), formule=produit.get("formule")) if details else None


def exploding_lookup(details: dict[str, Any]) -> ProductInfo | None:
    raise RuntimeError("catalogue down")


def test_variants():
    c = verification_block(None)
    assert "Aucune documentation produit" in c and "PARTIEL" in c
    b = verification_block(PRODUCT)
    assert "« Santé Sérénité »" in b and "Aucune documentation" not in b
    a = verification_block(PRODUCT, {"Délai de carence": ["Carence dentaire : 3 mois.", "x", "y", "z"]})
    assert "Point : Délai de carence" in a and "> Carence dentaire : 3 mois." in a and "> z" not in a  # ≤3 passages
    assert verification_block(None, {"p": []}) == c  # empty docs are no docs


def test_context_block_lists_what_the_model_may_rely_on():
    block = product_context_block(PRODUCT)
    for part in ("Santé Sérénité", "gamme SER", "Audioprothèse : non couvert", "Délai de carence de 3 mois",
                 "cotisation 84,20 €", "NON_CONFORME"):
        assert part in block


def test_lookup_resolution_and_failures():
    assert resolve_lookup("") is no_product and resolve_lookup(None) is no_product
    fn = resolve_lookup("tests.unit.test_product_context:lookup_from_fiche")
    assert fn is lookup_from_fiche
    with pytest.raises(ValueError):
        resolve_lookup("tests.unit.test_product_context")
    assert find_product(exploding_lookup, {"a": 1}) is None  # best effort: the audit goes on (variant C)
    assert find_product(lambda d: {"nom": "Dict"}, {}) == ProductInfo(nom="Dict")


def test_prompts_carry_blocks_3_and_4_only_for_product_steps():
    cfg = generator.load_checklist()
    product_step = next(s for s in cfg.steps if s.verify_product_info)
    plain_step: AuditStepSpec = next(s for s in cfg.steps if not s.verify_product_info)
    with_product = build_step_prompt(cfg, product_step, "TIMELINE", total_steps=len(cfg.steps), product=PRODUCT)
    assert with_product.index("TIMELINE") < with_product.index("CONTEXTE PRODUIT") < with_product.index("« Santé Sérénité »")
    assert "Aucune documentation produit" in build_step_prompt(cfg, product_step, "T", total_steps=10)
    assert "CONTEXTE PRODUIT" not in build_step_prompt(cfg, plain_step, "T", total_steps=10, product=PRODUCT)
    tools = build_tools_user_prompt(cfg, product_step, total_steps=10, product=PRODUCT)
    assert tools.startswith("CONTEXTE PRODUIT")
