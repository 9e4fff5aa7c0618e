"""Product context and the verification block of the step prompt (spec 03 §3.3).

A step with ``verifyProductInfo`` is judged against what was sold. The product comes from a
*pluggable lookup* — a function from the fiche's CRM details to a :class:`ProductInfo` or ``None``
— because the brokerage's product catalogue is not part of AuditFlow yet. The lookup is named by
``AUDITFLOW_PRODUCT_LOOKUP`` (``"package.module:function"``); unset, there is no product and every
such step gets verification variant C ("never invent guarantees").

Variants: **A** documentation passages per control point are available → compare against them;
**B** only the product record → a short checklist naming the product; **C** nothing → no invented
guarantees, product-dependent points at best PARTIEL.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, Field

log = logging.getLogger(__name__)


class ProductInfo(BaseModel):
    """What the prompt may say about the product sold (all optional but the name)."""

    nom: str
    gamme: str | None = None
    formule: str | None = None
    code: str | None = None
    #: headline coverages (hospitalisation, dentaire, optique, …) → level, or "non couvert"
    garanties: dict[str, str] = Field(default_factory=dict)
    documents: list[str] = Field(default_factory=list)
    #: full guarantee table and legal notes that must be communicated
    mentions_obligatoires: list[str] = Field(default_factory=list)
    #: what the fiche says was sold: formule, cotisation, date d'effet …
    vendu: dict[str, str] = Field(default_factory=dict)


ProductLookup = Callable[[Mapping[str, Any]], ProductInfo | None]


def no_product(details: Mapping[str, Any]) -> ProductInfo | None:
    """The default lookup: no catalogue, no product."""
    del details
    return None


def resolve_lookup(path: str | None) -> ProductLookup:
    """``"package.module:function"`` → that function; empty → :func:`no_product`."""
    if not path or not path.strip():
        return no_product
    module_name, _, attr = path.strip().partition(":")
    if not attr:
        raise ValueError(f"AUDITFLOW_PRODUCT_LOOKUP must be 'package.module:function', got {path!r}")
    fn = getattr(importlib.import_module(module_name), attr)
    if not callable(fn):
        raise ValueError(f"AUDITFLOW_PRODUCT_LOOKUP {path!r} is not callable")
    return fn


def find_product(lookup: ProductLookup, details: Mapping[str, Any]) -> ProductInfo | None:
    """Run the lookup; a failing lookup means "no product" (the audit goes on with variant C)."""
    try:
        found = lookup(details)
    except Exception:  # noqa: BLE001 - product linking is best effort (spec 03 §2.1 step 4)
        log.warning("product lookup failed; auditing without product data", exc_info=True)
        return None
    if found is None or isinstance(found, ProductInfo):
        return found
    return ProductInfo.model_validate(found)


def product_context_block(product: ProductInfo) -> str:
    """Block 3 of the prompt: the product's identity, coverages, documents, legal notes, what was sold."""
    lines = ["CONTEXTE PRODUIT", f"Produit : {product.nom}"]
    ident = ", ".join(f"{k} {v}" for k, v in (("gamme", product.gamme), ("formule", product.formule),
                                                ("code", product.code)) if v)
    if ident:
        lines.append(f"Identification : {ident}")
    if product.garanties:
        lines.append("Garanties principales :")
        lines.extend(f"- {k} : {v}" for k, v in product.garanties.items())
    if product.mentions_obligatoires:
        lines.append("Mentions à communiquer obligatoirement :")
        lines.extend(f"- {m}" for m in product.mentions_obligatoires)
    if product.vendu:
        lines.append("Ce que la fiche indique comme vendu : " + ", ".join(f"{k} {v}" for k, v in product.vendu.items()))
    if product.documents:
        lines.append("Documents : " + ", ".join(product.documents))
    lines.append("Grille : NON_CONFORME si l'information donnée est inexacte, incomplète ou inadaptée ; PARTIEL si elle "
                 "est correcte mais incomplète ; CONFORME si elle est complète, exacte et adaptée aux besoins exprimés.")
    return "\n".join(lines)


_VARIANT_C = """\
VÉRIFICATION DES INFORMATIONS PRODUIT
Aucune documentation produit (tableau de garanties, conditions générales) n'est disponible pour cet audit.
- N'invente JAMAIS de garantie, de montant, de taux de remboursement ni de délai de carence.
- Évalue uniquement ce que le conseiller a effectivement dit dans la transcription (clarté, cohérence, mentions obligatoires).
- Pour tout point de contrôle dont la vérification dépend des documents produit, attribue au mieux le statut PARTIEL \
(jamais PRESENT sur ce seul fondement) et précise dans le commentaire que la documentation produit n'était pas disponible."""


def verification_block(product: ProductInfo | None, docs: Mapping[str, list[str]] | None = None) -> str:
    """Block 4 (``verifyProductInfo`` steps only): variant A with documentation passages per control
    point, B with the product record only, C with nothing."""
    if docs and any(docs.values()):
        lines = ["VÉRIFICATION DES INFORMATIONS PRODUIT (documentation)"]
        for point, passages in docs.items():
            lines.append(f"Point : {point}")
            lines.extend(f"  > {p}" for p in passages[:3])
        lines.append("Toute divergence entre ce que dit le conseiller et la documentation rend le point NON_CONFORME "
                     "(ou PARTIEL si l'écart est mineur) ; cite l'élément de garantie concerné dans le commentaire.")
        return "\n".join(lines)
    if product is not None:
        return "\n".join([
            "VÉRIFICATION DES INFORMATIONS PRODUIT",
            f"Vérifie que le conseiller a présenté le produit « {product.nom} » conformément au contexte produit ci-dessus :",
            "- garanties et niveaux de remboursement annoncés exacts ;",
            "- délais de carence et exclusions mentionnés ;",
            "- cotisation et date d'effet conformes à ce qui a été vendu ;",
            "- adéquation aux besoins exprimés par le client.",
            "N'invente aucune information absente du contexte produit.",
        ])
    return _VARIANT_C
