"""SQLAlchemy models of the application database (``auditflow``).

Column names follow the legacy schema (spec 01 §2, 02 §1.3/§3.2, 03 §1.1/§2.6) because stored data
and the frontend depend on them. Additions of the rewrite are commented. Timestamps are naive UTC
``timestamp(3)`` like the legacy tables; every child FK cascades.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from auditflow_dagster.db.clock import now_utc

TS = DateTime(timezone=False)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSONB, list[str]: ARRAY(Text)}


def _pk() -> Mapped[int]:
    return mapped_column(BigInteger, primary_key=True, autoincrement=True)


def _created() -> Mapped[dt.datetime]:
    return mapped_column(TS, nullable=False, server_default=func.now(), default=now_utc)


def _updated() -> Mapped[dt.datetime]:
    return mapped_column(TS, nullable=False, server_default=func.now(), default=now_utc, onupdate=now_utc)


# --------------------------------------------------------------------------------------------
# Fiche cache (spec 01 §2)
# --------------------------------------------------------------------------------------------


class FicheCache(Base):
    __tablename__ = "fiche_cache"
    id: Mapped[int] = _pk()
    fiche_id: Mapped[str] = mapped_column(Text, nullable=False, unique=True)
    groupe: Mapped[str | None] = mapped_column(Text, index=True)
    agence_nom: Mapped[str | None] = mapped_column(Text)
    prospect_nom: Mapped[str | None] = mapped_column(Text)
    prospect_prenom: Mapped[str | None] = mapped_column(Text)
    prospect_email: Mapped[str | None] = mapped_column(Text)
    prospect_tel: Mapped[str | None] = mapped_column(Text)
    sales_date: Mapped[str | None] = mapped_column(Text, index=True)
    cle: Mapped[str | None] = mapped_column(Text)
    details_success: Mapped[bool | None] = mapped_column(Boolean)
    details_message: Mapped[str | None] = mapped_column(Text)
    raw_data: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, server_default=text("'{}'::jsonb"))
    has_recordings: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"), default=False)
    recordings_count: Mapped[int | None] = mapped_column(Integer)
    fetched_at: Mapped[dt.datetime] = mapped_column(TS, nullable=False, server_default=func.now(), default=now_utc)
    expires_at: Mapped[dt.datetime] = mapped_column(TS, nullable=False, index=True)
    last_revalidated_at: Mapped[dt.datetime | None] = mapped_column(TS, index=True)
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = _updated()


class FicheCacheInformation(Base):
    """1:1 normalized ``information`` section (scalars; ``modules`` as text[])."""

    __tablename__ = "fiche_cache_information"
    id: Mapped[int] = _pk()
    fiche_cache_id: Mapped[int] = mapped_column(
        ForeignKey("fiche_cache.id", ondelete="CASCADE"), nullable=False, unique=True
    )
    cle: Mapped[str | None] = mapped_column(Text)
    date_insertion: Mapped[str | None] = mapped_column(Text)
    createur: Mapped[str | None] = mapped_column(Text)
    fiches_associees: Mapped[str | None] = mapped_column(Text)
    nombre_acces: Mapped[int | None] = mapped_column(Integer)
    dernier_acces: Mapped[str | None] = mapped_column(Text)
    groupe: Mapped[str | None] = mapped_column(Text, index=True)
    groupe_responsable: Mapped[str | None] = mapped_column(Text)
    groupe_gestion: Mapped[str | None] = mapped_column(Text)
    groupe_reclamation: Mapped[str | None] = mapped_column(Text)
    agence_id: Mapped[str | None] = mapped_column(Text)
    agence_nom: Mapped[str | None] = mapped_column(Text)
    attribution_user_id: Mapped[str | None] = mapped_column(Text)
    attribution_user_nom: Mapped[str | None] = mapped_column(Text)
    provenance_id: Mapped[str | None] = mapped_column(Text)
    provenance_nom: Mapped[str | None] = mapped_column(Text)
    provenance_numero: Mapped[str | None] = mapped_column(Text)
    provenance_periode_rappel: Mapped[str | None] = mapped_column(Text)
    origine_id: Mapped[str | None] = mapped_column(Text)
    origine_nom: Mapped[str | None] = mapped_column(Text)
    attribution_bis_user_id: Mapped[str | None] = mapped_column(Text)
    attribution_bis_user_nom: Mapped[str | None] = mapped_column(Text)
    refus_demarchage: Mapped[bool | None] = mapped_column(Boolean)
    exception_demarchage: Mapped[bool | None] = mapped_column(Boolean)
    exception_demarchage_commentaire: Mapped[str | None] = mapped_column(Text)
    niveau_interet: Mapped[int | None] = mapped_column(Integer)
    nombre_ouverture_mails: Mapped[int | None] = mapped_column(Integer)
    derniere_ouverture_mail: Mapped[str | None] = mapped_column(Text)
    nombre_visualisation_pages: Mapped[int | None] = mapped_column(Integer)
    derniere_visualisation_page: Mapped[str | None] = mapped_column(Text)
    espace_prospect_url: Mapped[str | None] = mapped_column(Text)
    ferme_espace_prospect: Mapped[bool | None] = mapped_column(Boolean)
    desinscription_mail: Mapped[bool | None] = mapped_column(Boolean)
    corbeille: Mapped[bool | None] = mapped_column(Boolean)
    archive: Mapped[bool | None] = mapped_column(Boolean)
    modules: Mapped[list[str] | None] = mapped_column(ARRAY(Text))
    extra: Mapped[dict[str, Any]] = mapped_column(
        JSONB, nullable=False, server_default=text("'{}'::jsonb"), default=dict
    )  # rewrite: unknown information keys, so nothing the CRM sends is lost
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = _updated()


class FicheCacheEtiquette(Base):
    __tablename__ = "fiche_cache_etiquettes"
    __table_args__ = (UniqueConstraint("fiche_cache_id", "etiquette_index"),)
    id: Mapped[int] = _pk()
    fiche_cache_id: Mapped[int] = mapped_column(ForeignKey("fiche_cache.id", ondelete="CASCADE"), nullable=False)
    etiquette_index: Mapped[int] = mapped_column(Integer, nullable=False)
    nom: Mapped[str | None] = mapped_column(Text)
    date: Mapped[str | None] = mapped_column(Text)
    style: Mapped[str | None] = mapped_column(Text)
    extra: Mapped[dict[str, Any]] = mapped_column(
        JSONB, nullable=False, server_default=text("'{}'::jsonb"), default=dict
    )  # rewrite: unknown etiquette keys (see core.fiche_sections)
    created_at: Mapped[dt.datetime] = _created()


class FicheCacheProspect(Base):
    __tablename__ = "fiche_cache_prospects"
    id: Mapped[int] = _pk()
    fiche_cache_id: Mapped[int] = mapped_column(
        ForeignKey("fiche_cache.id", ondelete="CASCADE"), nullable=False, unique=True
    )
    prospect_id: Mapped[str | None] = mapped_column(Text, index=True)
    civilite: Mapped[int | None] = mapped_column(Integer)
    civilite_text: Mapped[str | None] = mapped_column(Text)
    nom: Mapped[str | None] = mapped_column(Text)
    prenom: Mapped[str | None] = mapped_column(Text)
    date_naissance: Mapped[str | None] = mapped_column(Text)
    regime: Mapped[str | None] = mapped_column(Text)
    regime_text: Mapped[str | None] = mapped_column(Text)
    telephone: Mapped[str | None] = mapped_column(Text)
    mobile: Mapped[str | None] = mapped_column(Text)
    telephone_2: Mapped[str | None] = mapped_column(Text)
    mail: Mapped[str | None] = mapped_column(Text)
    mail_2: Mapped[str | None] = mapped_column(Text)
    adresse: Mapped[str | None] = mapped_column(Text)
    code_postal: Mapped[str | None] = mapped_column(Text)
    ville: Mapped[str | None] = mapped_column(Text)
    num_secu: Mapped[str | None] = mapped_column(Text)
    num_affiliation: Mapped[str | None] = mapped_column(Text)
    situation_familiale: Mapped[int | None] = mapped_column(Integer)
    situation_familiale_text: Mapped[str | None] = mapped_column(Text)
    madelin: Mapped[bool | None] = mapped_column(Boolean)
    profession: Mapped[str | None] = mapped_column(Text)
    csp: Mapped[int | None] = mapped_column(Integer)
    csp_text: Mapped[str | None] = mapped_column(Text)
    fax: Mapped[str | None] = mapped_column(Text)
    extra: Mapped[dict[str, Any]] = mapped_column(
        JSONB, nullable=False, server_default=text("'{}'::jsonb"), default=dict
    )
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = _updated()


class FicheSalesDay(Base):
    """Rewrite (spec 01 §4.4): one marker per processed sales day, zero-sale days included."""

    __tablename__ = "fiche_sales_days"
    sales_date: Mapped[str] = mapped_column(Text, primary_key=True)
    fetched_at: Mapped[dt.datetime] = mapped_column(TS, nullable=False, default=now_utc)
    crm_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    cached_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)


# --------------------------------------------------------------------------------------------
# Recordings and transcription chunks (spec 02 §1.3, §3.2)
# --------------------------------------------------------------------------------------------


class Recording(Base):
    __tablename__ = "recordings"
    __table_args__ = (UniqueConstraint("fiche_cache_id", "call_id"),)
    id: Mapped[int] = _pk()
    fiche_cache_id: Mapped[int] = mapped_column(
        ForeignKey("fiche_cache.id", ondelete="CASCADE"), nullable=False, index=True
    )
    call_id: Mapped[str] = mapped_column(Text, nullable=False, index=True)
    recording_url: Mapped[str] = mapped_column(Text, nullable=False, default="")
    recording_date: Mapped[str | None] = mapped_column(Text, index=True)
    recording_time: Mapped[str | None] = mapped_column(Text)
    from_number: Mapped[str | None] = mapped_column(Text)
    to_number: Mapped[str | None] = mapped_column(Text)
    uuid: Mapped[str | None] = mapped_column(Text)
    direction: Mapped[str | None] = mapped_column(Text)
    answered: Mapped[bool | None] = mapped_column(Boolean)
    start_time: Mapped[dt.datetime | None] = mapped_column(TS)
    duration_seconds: Mapped[int | None] = mapped_column(Integer)
    transcription_id: Mapped[str | None] = mapped_column(Text)
    transcription_text: Mapped[str | None] = mapped_column(Text)
    transcription_data: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    transcription_language_code: Mapped[str | None] = mapped_column(Text)
    transcription_language_probability: Mapped[float | None] = mapped_column(Float)
    has_transcription: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"), default=False)
    transcribed_at: Mapped[dt.datetime | None] = mapped_column(TS)
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = mapped_column(TS, nullable=False, default=now_utc, onupdate=now_utc)


class RecordingTranscriptionChunk(Base):
    __tablename__ = "recording_transcription_chunks"
    __table_args__ = (UniqueConstraint("recording_id", "chunk_index"),)
    id: Mapped[int] = _pk()
    recording_id: Mapped[int] = mapped_column(
        ForeignKey("recordings.id", ondelete="CASCADE"), nullable=False, index=True
    )
    chunk_index: Mapped[int] = mapped_column(Integer, nullable=False, index=True)
    start_timestamp: Mapped[float] = mapped_column(Float, nullable=False)
    end_timestamp: Mapped[float] = mapped_column(Float, nullable=False)
    message_count: Mapped[int] = mapped_column(Integer, nullable=False)
    speakers: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False, server_default=text("'{}'"))
    full_text: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[dt.datetime] = _created()


# --------------------------------------------------------------------------------------------
# Audit configurations (spec 03 §1)
# --------------------------------------------------------------------------------------------


class AuditConfig(Base):
    __tablename__ = "audit_configs"
    id: Mapped[int] = _pk()
    name: Mapped[str] = mapped_column(Text, nullable=False)
    description: Mapped[str | None] = mapped_column(Text)
    system_prompt: Mapped[str | None] = mapped_column(Text)
    is_active: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"), default=True)
    run_automatically: Mapped[bool] = mapped_column(
        Boolean, nullable=False, server_default=text("false"), default=False
    )
    created_by: Mapped[str | None] = mapped_column(Text)
    extra: Mapped[dict[str, Any]] = mapped_column(
        JSONB, nullable=False, server_default=text("'{}'::jsonb"), default=dict
    )  # rewrite: informational keys of the legacy JSON, kept for export only
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = _updated()


class AuditStep(Base):
    __tablename__ = "audit_steps"
    __table_args__ = (UniqueConstraint("audit_config_id", "position"),)
    id: Mapped[int] = _pk()
    audit_config_id: Mapped[int] = mapped_column(
        ForeignKey("audit_configs.id", ondelete="CASCADE"), nullable=False, index=True
    )
    name: Mapped[str] = mapped_column(Text, nullable=False)
    description: Mapped[str | None] = mapped_column(Text)
    prompt: Mapped[str] = mapped_column(Text, nullable=False)
    control_points: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False)
    keywords: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False, server_default=text("'{}'"))
    severity_level: Mapped[str] = mapped_column(String(16), nullable=False)
    is_critical: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"), default=False)
    position: Mapped[int] = mapped_column(Integer, nullable=False)
    chronological_important: Mapped[bool] = mapped_column(
        Boolean, nullable=False, server_default=text("false"), default=False
    )
    weight: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("5"), default=5)
    verify_product_info: Mapped[bool] = mapped_column(
        Boolean, nullable=False, server_default=text("false"), default=False
    )
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = _updated()


# --------------------------------------------------------------------------------------------
# Audits and step results (spec 03 §2.6)
# --------------------------------------------------------------------------------------------


class Audit(Base):
    __tablename__ = "audits"
    __table_args__ = (
        Index("ix_audits_fiche_config_latest", "fiche_cache_id", "audit_config_id", "is_latest"),
        Index("ix_audits_status", "status"),
        Index("ix_audits_updated_at", "updated_at"),
        Index("ix_audits_created_at", "created_at"),
    )
    id: Mapped[int] = _pk()
    fiche_cache_id: Mapped[int] = mapped_column(
        ForeignKey("fiche_cache.id", ondelete="CASCADE"), nullable=False, index=True
    )
    audit_config_id: Mapped[int] = mapped_column(
        ForeignKey("audit_configs.id", ondelete="RESTRICT"), nullable=False, index=True
    )
    # rewrite: the tracking id (audit-<fiche>-<config>-<ms>) as a column, unique, so retries of
    # the same request find their audit instead of creating a second one.
    tracking_id: Mapped[str] = mapped_column(Text, nullable=False, unique=True)
    dagster_run_id: Mapped[str | None] = mapped_column(Text, index=True)
    automation_schedule_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("automation_schedules.id", ondelete="SET NULL", name="fk_audits_automation_schedule"))
    automation_run_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("automation_runs.id", ondelete="SET NULL", name="fk_audits_automation_run"),
        index=True)
    trigger_source: Mapped[str] = mapped_column(String(50), nullable=False, server_default=text("'api'"))
    trigger_user_id: Mapped[str | None] = mapped_column(Text)
    use_rlm: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"), default=False)
    notes: Mapped[str | None] = mapped_column(Text)
    deleted_at: Mapped[dt.datetime | None] = mapped_column(TS)
    overall_score: Mapped[Any] = mapped_column(Numeric(5, 2), nullable=False, server_default=text("0"))
    score_percentage: Mapped[Any] = mapped_column(Numeric(5, 2), nullable=False, server_default=text("0"))
    niveau: Mapped[str] = mapped_column(String(20), nullable=False, server_default=text("'PENDING'"))
    is_compliant: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    critical_passed: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    critical_total: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    status: Mapped[str] = mapped_column(String(20), nullable=False, server_default=text("'pending'"))
    started_at: Mapped[dt.datetime | None] = mapped_column(TS)
    completed_at: Mapped[dt.datetime | None] = mapped_column(TS)
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    error_message: Mapped[str | None] = mapped_column(Text)
    total_tokens: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    successful_steps: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    failed_steps: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    recordings_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    timeline_chunks: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    result_data: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    version: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("1"))
    is_latest: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = _updated()


class AuditSnapshot(Base):
    """Rewrite (spec 03 §2.4): the immutable per-audit context every step worker, the finalizer and
    later reruns read, so citation indices never shift under them."""

    __tablename__ = "audit_snapshots"
    audit_id: Mapped[int] = mapped_column(ForeignKey("audits.id", ondelete="CASCADE"), primary_key=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    timeline: Mapped[list[Any]] = mapped_column(JSONB, nullable=False)
    timeline_text: Mapped[str] = mapped_column(Text, nullable=False)
    step_excerpts: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, default=dict)
    product_info: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    created_at: Mapped[dt.datetime] = _created()


class AuditStepResult(Base):
    __tablename__ = "audit_step_results"
    __table_args__ = (UniqueConstraint("audit_id", "step_position"),)
    id: Mapped[int] = _pk()
    audit_id: Mapped[int] = mapped_column(ForeignKey("audits.id", ondelete="CASCADE"), nullable=False, index=True)
    step_position: Mapped[int] = mapped_column(Integer, nullable=False)
    step_name: Mapped[str] = mapped_column(Text, nullable=False)
    severity_level: Mapped[str] = mapped_column(String(16), nullable=False)
    is_critical: Mapped[bool] = mapped_column(Boolean, nullable=False)
    weight: Mapped[int] = mapped_column(Integer, nullable=False)
    traite: Mapped[bool] = mapped_column(Boolean, nullable=False)
    conforme: Mapped[str] = mapped_column(String(20), nullable=False)
    score: Mapped[int] = mapped_column(Integer, nullable=False)
    niveau_conformite: Mapped[str] = mapped_column(String(20), nullable=False)
    commentaire_global: Mapped[str] = mapped_column(Text, nullable=False, default="")
    mots_cles_trouves: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False, server_default=text("'{}'"))
    minutages: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False, server_default=text("'{}'"))
    erreurs_transcription_tolerees: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    total_citations: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    total_tokens: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    raw_result: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = _updated()


class AuditStepResultControlPoint(Base):
    __tablename__ = "audit_step_result_control_points"
    __table_args__ = (
        UniqueConstraint("audit_id", "step_position", "control_point_index"),
        ForeignKeyConstraint(
            ["audit_id", "step_position"],
            ["audit_step_results.audit_id", "audit_step_results.step_position"],
            ondelete="CASCADE",
        ),
    )
    id: Mapped[int] = _pk()
    audit_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    step_position: Mapped[int] = mapped_column(Integer, nullable=False)
    control_point_index: Mapped[int] = mapped_column(Integer, nullable=False)
    point: Mapped[str] = mapped_column(Text, nullable=False)
    statut: Mapped[str] = mapped_column(String(20), nullable=False)
    commentaire: Mapped[str] = mapped_column(Text, nullable=False, default="")
    minutages: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False, server_default=text("'{}'"))
    erreur_transcription_notee: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    variation_phonetique_utilisee: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = _updated()


class AuditStepResultCitation(Base):
    __tablename__ = "audit_step_result_citations"
    __table_args__ = (
        UniqueConstraint("audit_id", "step_position", "control_point_index", "citation_index"),
        ForeignKeyConstraint(
            ["audit_id", "step_position", "control_point_index"],
            [
                "audit_step_result_control_points.audit_id",
                "audit_step_result_control_points.step_position",
                "audit_step_result_control_points.control_point_index",
            ],
            ondelete="CASCADE",
        ),
    )
    id: Mapped[int] = _pk()
    audit_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    step_position: Mapped[int] = mapped_column(Integer, nullable=False)
    control_point_index: Mapped[int] = mapped_column(Integer, nullable=False)
    citation_index: Mapped[int] = mapped_column(Integer, nullable=False)
    texte: Mapped[str] = mapped_column(Text, nullable=False, default="")
    minutage: Mapped[str] = mapped_column(Text, nullable=False, default="")
    minutage_secondes: Mapped[float] = mapped_column(Float, nullable=False, default=0)
    speaker: Mapped[str] = mapped_column(Text, nullable=False, default="")
    recording_index: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    chunk_index: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    recording_date: Mapped[str] = mapped_column(Text, nullable=False, default="N/A")
    recording_time: Mapped[str] = mapped_column(Text, nullable=False, default="N/A")
    recording_url: Mapped[str] = mapped_column(Text, nullable=False, default="N/A")
    created_at: Mapped[dt.datetime] = _created()


# --------------------------------------------------------------------------------------------
# Events outbox (DESIGN §3.9, spec 06 §2.4)
# --------------------------------------------------------------------------------------------


class Event(Base):
    """Append-only domain events; ``id`` is the SSE event id. Written in the same transaction as
    the state change it reports, then ``NOTIFY auditflow_events``."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_channels", "channels", postgresql_using="gin"),
        Index("ix_events_created_at", "created_at"),
    )
    id: Mapped[int] = _pk()
    name: Mapped[str] = mapped_column(Text, nullable=False)
    channels: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    created_at: Mapped[dt.datetime] = _created()






# --------------------------------------------------------------------------------------------
# Progressive date-range fetch jobs and outgoing webhooks (spec 01 §4.3, §4.7; spec 06 §3.1)
# --------------------------------------------------------------------------------------------


class ProgressiveFetchJob(Base):
    __tablename__ = "progressive_fetch_jobs"
    __table_args__ = (
        Index("ix_pfj_status", "status"),
        Index("ix_pfj_range", "start_date", "end_date"),
        Index("ix_pfj_created_at", "created_at"),
        Index("ix_pfj_completed_at", "completed_at"),
    )
    id: Mapped[str] = mapped_column(Text, primary_key=True)
    start_date: Mapped[str] = mapped_column(Text, nullable=False)
    end_date: Mapped[str] = mapped_column(Text, nullable=False)
    status: Mapped[str] = mapped_column(Text, nullable=False, server_default=text("'pending'"))
    progress: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    total_days: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    completed_days: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    total_fiches: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    dates_already_fetched: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False, server_default=text("'{}'"))
    dates_remaining: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False, server_default=text("'{}'"))
    dates_failed: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False, server_default=text("'{}'"))
    webhook_url: Mapped[str | None] = mapped_column(Text)
    # rewrite: the webhook secret is stored encrypted (never in clear, never returned)
    webhook_secret_encrypted: Mapped[str | None] = mapped_column(Text)
    webhook_events: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False, server_default=text("'{}'"))
    last_webhook_sent_at: Mapped[dt.datetime | None] = mapped_column(TS)
    webhook_attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    webhook_last_error: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    last_dispatched_at: Mapped[dt.datetime | None] = mapped_column(TS)  # rewrite: stale-dispatch relaunch
    dagster_run_id: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = _updated()
    completed_at: Mapped[dt.datetime | None] = mapped_column(TS)


class WebhookDelivery(Base):
    """One outgoing webhook, its payload kept as columns and rebuilt for each attempt."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_wd_job_id", "job_id"),
        Index("ix_wd_status_next", "status", "next_retry_at"),
        Index("ix_wd_event", "event"),
        Index("ix_wd_created_at", "created_at"),
    )
    id: Mapped[str] = mapped_column(Text, primary_key=True)
    job_id: Mapped[str | None] = mapped_column(ForeignKey("progressive_fetch_jobs.id", ondelete="CASCADE"))
    source: Mapped[str] = mapped_column(Text, nullable=False, server_default=text("'progressive_fetch'"))
    event: Mapped[str] = mapped_column(Text, nullable=False)
    url: Mapped[str] = mapped_column(Text, nullable=False)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, server_default=text("'{}'::jsonb"))
    payload_timestamp: Mapped[str | None] = mapped_column(Text)
    payload_status: Mapped[str | None] = mapped_column(Text)
    payload_progress: Mapped[int | None] = mapped_column(Integer)
    payload_completed_days: Mapped[int | None] = mapped_column(Integer)
    payload_total_days: Mapped[int | None] = mapped_column(Integer)
    payload_total_fiches: Mapped[int | None] = mapped_column(Integer)
    payload_current_fiches_count: Mapped[int | None] = mapped_column(Integer)
    payload_latest_date: Mapped[str | None] = mapped_column(Text)
    payload_error: Mapped[str | None] = mapped_column(Text)
    payload_data_url: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text, nullable=False, server_default=text("'pending'"))
    status_code: Mapped[int | None] = mapped_column(Integer)
    response_body: Mapped[str | None] = mapped_column(Text)
    attempt: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("1"))
    max_attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("3"))
    next_retry_at: Mapped[dt.datetime | None] = mapped_column(TS)
    sent_at: Mapped[dt.datetime | None] = mapped_column(TS)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = _updated()
    #: automation webhooks (spec 05 §5.2): the payload is the stored JSON ``payload``
    automation_run_id: Mapped[int | None] = mapped_column(
        ForeignKey("automation_runs.id", ondelete="CASCADE", name="fk_wd_automation_run"), index=True)


class WebhookDeliveryPartialFiche(Base):
    __tablename__ = "webhook_delivery_partial_fiches"
    __table_args__ = (UniqueConstraint("delivery_id", "row_index"),)
    id: Mapped[int] = _pk()
    delivery_id: Mapped[str] = mapped_column(
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), nullable=False, index=True
    )
    row_index: Mapped[int] = mapped_column(Integer, nullable=False)
    fiche_id: Mapped[str] = mapped_column(Text, nullable=False)
    groupe: Mapped[str | None] = mapped_column(Text)
    prospect_nom: Mapped[str | None] = mapped_column(Text)
    prospect_prenom: Mapped[str | None] = mapped_column(Text)
    recordings_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    fiche_created_at: Mapped[str | None] = mapped_column(Text)

metadata = Base.metadata


# --------------------------------------------------------------------------------------------
# Normalized full-details sections (spec 01 §2.2), written only by full-details caching.
#
# The section columns of each table are declared once, in core.fiche_sections.FIELDS (which also
# maps them to payload paths); the classes below add keys, parent FKs, 1-based row indexes, the
# ``extra`` patch (whatever the columns cannot hold, so nothing the CRM sends is lost) and
# timestamps. Every FK cascades.
# --------------------------------------------------------------------------------------------

from auditflow_dagster.core import fiche_sections as _fs  # noqa: E402

_KIND_TYPES: dict[str, Any] = {"text": Text, "int": Integer, "bool": Boolean, "texts": ARRAY(Text), "json": JSONB}


def _section_cols(table: str, *skip: str) -> type:
    """A mixin holding the nullable section columns of ``table`` (kinds from core.fiche_sections)."""
    attrs = {col: mapped_column(_KIND_TYPES[kind]) for col, _, kind in _fs.FIELDS[table] if col not in skip}
    return type(f"_Cols_{table}", (), attrs)


def _parent(table: str, *, unique: bool = False) -> Any:
    return mapped_column(BigInteger, ForeignKey(f"{table}.id", ondelete="CASCADE"), nullable=False, unique=unique)


def _extra() -> Any:
    return mapped_column(JSONB, nullable=False, server_default=text("'{}'::jsonb"), default=dict, sort_order=100)


def _created_at() -> Any:  # section tables: bookkeeping columns after the section columns
    return mapped_column(TS, nullable=False, server_default=func.now(), default=now_utc, sort_order=101)


def _updated_at() -> Any:
    return mapped_column(TS, nullable=False, server_default=func.now(), default=now_utc, onupdate=now_utc, sort_order=102)


def _row_index() -> Any:
    return mapped_column(Integer, nullable=False)


class FicheCacheConjoint(_section_cols("fiche_cache_conjoints"), Base):
    __tablename__ = "fiche_cache_conjoints"
    __table_args__ = (Index("ix_fiche_cache_conjoints_conjoint_id", "conjoint_id"),)
    id: Mapped[int] = _pk()
    fiche_cache_id: Mapped[int] = _parent("fiche_cache", unique=True)
    extra: Mapped[dict[str, Any]] = _extra()
    created_at: Mapped[dt.datetime] = _created_at()
    updated_at: Mapped[dt.datetime] = _updated_at()


def _list_section(class_name: str, table: str, item_id: str | None) -> type:
    """``fiche_cache_<list>``: UNIQUE(fiche, row_index), index on the item id (spec §2.2)."""
    args: list[Any] = [UniqueConstraint("fiche_cache_id", "row_index", name=f"uq_{table}_row")]
    if item_id:
        args.append(Index(f"ix_{table}_{item_id}", item_id))
    attrs = {
        "__tablename__": table,
        "__table_args__": tuple(args),
        "id": _pk(),
        "fiche_cache_id": _parent("fiche_cache"),
        "row_index": _row_index(),
        "extra": _extra(),
        "created_at": _created_at(),
    }
    return type(class_name, (_section_cols(table), Base), attrs)


FicheCacheDocument = _list_section("FicheCacheDocument", "fiche_cache_documents", "document_id")
FicheCacheCommentaire = _list_section("FicheCacheCommentaire", "fiche_cache_commentaires", "commentaire_id")
FicheCacheMail = _list_section("FicheCacheMail", "fiche_cache_mails", None)
FicheCacheRendezVous = _list_section("FicheCacheRendezVous", "fiche_cache_rendez_vous", "rdv_id")
FicheCacheAlerte = _list_section("FicheCacheAlerte", "fiche_cache_alertes", "alerte_id")
FicheCacheEnfant = _list_section("FicheCacheEnfant", "fiche_cache_enfants", "enfant_id")
FicheCacheReclamation = _list_section("FicheCacheReclamation", "fiche_cache_reclamations", "reclamation_id")
FicheCacheAutreContrat = _list_section("FicheCacheAutreContrat", "fiche_cache_autres_contrats", "contrat_id")


class FicheCacheRawSection(Base):
    __tablename__ = "fiche_cache_raw_sections"
    __table_args__ = (UniqueConstraint("fiche_cache_id", "section_key", name="uq_fiche_cache_raw_sections_key"),)
    id: Mapped[int] = _pk()
    fiche_cache_id: Mapped[int] = _parent("fiche_cache")
    section_key: Mapped[str] = mapped_column(Text, nullable=False)
    section_value: Mapped[str | None] = mapped_column(Text)  # string values only (others: raw_data patch)
    extra: Mapped[dict[str, Any]] = _extra()
    created_at: Mapped[dt.datetime] = _created_at()


class FicheCacheElementsSouscription(_section_cols("fiche_cache_elements_souscription"), Base):
    """Flattened: top-level scalars, ``ancien_*`` (13), ``produit_*`` (15), ``paiement_*`` (4),
    ``prelevement_*``/``virement_*`` accounts (6 each), jsonb ``questions_*`` and ``raw_data``."""

    __tablename__ = "fiche_cache_elements_souscription"
    id: Mapped[int] = _pk()
    fiche_cache_id: Mapped[int] = _parent("fiche_cache", unique=True)
    extra: Mapped[dict[str, Any]] = _extra()
    created_at: Mapped[dt.datetime] = _created_at()
    updated_at: Mapped[dt.datetime] = _updated_at()


class FicheCacheTarification(_section_cols("fiche_cache_tarifications"), Base):
    __tablename__ = "fiche_cache_tarifications"
    __table_args__ = (UniqueConstraint("fiche_cache_id", "row_index", name="uq_fiche_cache_tarifications_row"),)
    id: Mapped[int] = _pk()
    fiche_cache_id: Mapped[int] = _parent("fiche_cache")
    row_index: Mapped[int] = _row_index()
    extra: Mapped[dict[str, Any]] = _extra()
    created_at: Mapped[dt.datetime] = _created_at()


class FicheCacheTarificationGamme(_section_cols("fiche_cache_tarification_gammes"), Base):
    __tablename__ = "fiche_cache_tarification_gammes"
    __table_args__ = (UniqueConstraint("tarification_id", "row_index", name="uq_fiche_cache_tarif_gammes_row"),)
    id: Mapped[int] = _pk()
    tarification_id: Mapped[int] = _parent("fiche_cache_tarifications")
    row_index: Mapped[int] = _row_index()
    extra: Mapped[dict[str, Any]] = _extra()
    created_at: Mapped[dt.datetime] = _created_at()


class FicheCacheTarificationFormule(_section_cols("fiche_cache_tarification_formules"), Base):
    __tablename__ = "fiche_cache_tarification_formules"
    __table_args__ = (UniqueConstraint("gamme_id", "row_index", name="uq_fiche_cache_tarif_formules_row"),)
    id: Mapped[int] = _pk()
    gamme_id: Mapped[int] = _parent("fiche_cache_tarification_gammes")
    row_index: Mapped[int] = _row_index()
    extra: Mapped[dict[str, Any]] = _extra()
    created_at: Mapped[dt.datetime] = _created_at()


class FicheCacheTarificationFormuleDetail(Base):
    __tablename__ = "fiche_cache_tarification_formule_details"
    __table_args__ = (UniqueConstraint("formule_row_id", "detail_key", name="uq_fiche_cache_tarif_details_key"),)
    id: Mapped[int] = _pk()
    formule_row_id: Mapped[int] = _parent("fiche_cache_tarification_formules")
    detail_key: Mapped[str] = mapped_column(Text, nullable=False)
    detail_value: Mapped[str | None] = mapped_column(Text)
    extra: Mapped[dict[str, Any]] = _extra()
    created_at: Mapped[dt.datetime] = _created_at()


class FicheCacheMailDevis(_section_cols("fiche_cache_mail_devis"), Base):
    """One column per scalar leaf of ``mail_devis`` (prefixes ``customer_``, ``garanties_link_``,
    ``details_``, ``agence_``, ``fiche_info_``, ``subscriber_``, ``doc_``, ``menu_``)."""

    __tablename__ = "fiche_cache_mail_devis"
    id: Mapped[int] = _pk()
    fiche_cache_id: Mapped[int] = _parent("fiche_cache", unique=True)
    extra: Mapped[dict[str, Any]] = _extra()
    created_at: Mapped[dt.datetime] = _created_at()
    updated_at: Mapped[dt.datetime] = _updated_at()


class FicheCacheMailDevisGarantieCategory(Base):
    __tablename__ = "fiche_cache_mail_devis_garantie_categories"
    __table_args__ = (UniqueConstraint("mail_devis_id", "category_key", name="uq_fiche_cache_md_categories_key"),)
    id: Mapped[int] = _pk()
    mail_devis_id: Mapped[int] = _parent("fiche_cache_mail_devis")
    category_key: Mapped[str] = mapped_column(Text, nullable=False)
    category_name: Mapped[str | None] = mapped_column(Text)
    subcategories_format: Mapped[str] = mapped_column(Text, nullable=False, server_default=text("'named'"))  # named|array
    extra: Mapped[dict[str, Any]] = _extra()
    created_at: Mapped[dt.datetime] = _created_at()


class FicheCacheMailDevisCategoryNoteRef(Base):
    __tablename__ = "fiche_cache_mail_devis_category_note_refs"
    __table_args__ = (UniqueConstraint("category_id", "row_index", name="uq_fiche_cache_md_note_refs_row"),)
    id: Mapped[int] = _pk()
    category_id: Mapped[int] = _parent("fiche_cache_mail_devis_garantie_categories")
    row_index: Mapped[int] = _row_index()
    note_reference: Mapped[str | None] = mapped_column(Text)
    extra: Mapped[dict[str, Any]] = _extra()
    created_at: Mapped[dt.datetime] = _created_at()


class FicheCacheMailDevisCategoryItem(_section_cols("fiche_cache_mail_devis_category_items"), Base):
    __tablename__ = "fiche_cache_mail_devis_category_items"
    __table_args__ = (UniqueConstraint("category_id", "row_index", name="uq_fiche_cache_md_cat_items_row"),)
    id: Mapped[int] = _pk()
    category_id: Mapped[int] = _parent("fiche_cache_mail_devis_garantie_categories")
    row_index: Mapped[int] = _row_index()
    extra: Mapped[dict[str, Any]] = _extra()
    created_at: Mapped[dt.datetime] = _created_at()


class FicheCacheMailDevisGarantieSubcategory(Base):
    __tablename__ = "fiche_cache_mail_devis_garantie_subcategories"
    __table_args__ = (UniqueConstraint("category_id", "sub_key", name="uq_fiche_cache_md_subcategories_key"),)
    id: Mapped[int] = _pk()
    category_id: Mapped[int] = _parent("fiche_cache_mail_devis_garantie_categories")
    sub_key: Mapped[str] = mapped_column(Text, nullable=False)
    name: Mapped[str | None] = mapped_column(Text)  # named format only, kept only if a string
    extra: Mapped[dict[str, Any]] = _extra()
    created_at: Mapped[dt.datetime] = _created_at()


class FicheCacheMailDevisSubcategoryItem(_section_cols("fiche_cache_mail_devis_subcategory_items"), Base):
    __tablename__ = "fiche_cache_mail_devis_subcategory_items"
    __table_args__ = (UniqueConstraint("subcategory_id", "row_index", name="uq_fiche_cache_md_sub_items_row"),)
    id: Mapped[int] = _pk()
    subcategory_id: Mapped[int] = _parent("fiche_cache_mail_devis_garantie_subcategories")
    row_index: Mapped[int] = _row_index()
    extra: Mapped[dict[str, Any]] = _extra()
    created_at: Mapped[dt.datetime] = _created_at()


class FicheCacheMailDevisNote(_section_cols("fiche_cache_mail_devis_notes"), Base):
    __tablename__ = "fiche_cache_mail_devis_notes"
    __table_args__ = (UniqueConstraint("mail_devis_id", "row_index", name="uq_fiche_cache_md_notes_row"),)
    id: Mapped[int] = _pk()
    mail_devis_id: Mapped[int] = _parent("fiche_cache_mail_devis")
    row_index: Mapped[int] = _row_index()
    extra: Mapped[dict[str, Any]] = _extra()
    created_at: Mapped[dt.datetime] = _created_at()


#: table name → model, for every table of core.fiche_sections.FIELDS.
SECTION_MODELS: dict[str, Any] = {
    m.__tablename__: m
    for m in (
        FicheCacheInformation, FicheCacheEtiquette, FicheCacheProspect, FicheCacheConjoint, FicheCacheDocument,
        FicheCacheCommentaire, FicheCacheMail, FicheCacheRendezVous, FicheCacheAlerte, FicheCacheEnfant,
        FicheCacheReclamation, FicheCacheAutreContrat, FicheCacheRawSection, FicheCacheElementsSouscription,
        FicheCacheTarification, FicheCacheTarificationGamme, FicheCacheTarificationFormule,
        FicheCacheTarificationFormuleDetail, FicheCacheMailDevis, FicheCacheMailDevisGarantieCategory,
        FicheCacheMailDevisCategoryNoteRef, FicheCacheMailDevisCategoryItem,
        FicheCacheMailDevisGarantieSubcategory, FicheCacheMailDevisSubcategoryItem, FicheCacheMailDevisNote,
    )
}


# --------------------------------------------------------------------------------------------
# Transcription batch dedup (spec 02 §5.6)
# --------------------------------------------------------------------------------------------


class TranscriptionRequest(Base):
    """Rewrite: the claim of ``POST /api/transcriptions/batch`` for one fiche and one UTC day
    (``dedup_key`` = ``transcribe-<fiche_id>-<YYYY-MM-DD>``). Inserted with ON CONFLICT DO NOTHING
    before the launch, so concurrent batches launch a fiche once; ``run_id`` is set once the
    Dagster run is launched, and a claim whose launch failed is deleted (a retry launches)."""

    __tablename__ = "transcription_requests"
    __table_args__ = (Index("ix_transcription_requests_created_at", "created_at"),)
    dedup_key: Mapped[str] = mapped_column(Text, primary_key=True)
    fiche_id: Mapped[str] = mapped_column(Text, nullable=False)
    run_id: Mapped[str | None] = mapped_column(Text)
    priority: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())


class RateLimitBucket(Base):
    """A token bucket shared by every process (provider start rates, spec 02 §2); see
    :mod:`auditflow_dagster.db.rate_limit`."""

    __tablename__ = "rate_limit_buckets"
    name: Mapped[str] = mapped_column(Text, primary_key=True)
    tokens: Mapped[float] = mapped_column(Float, nullable=False)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)


# --------------------------------------------------------------------------------------------
# After the verdict (spec 04): review/rerun trails, batches, chat
# --------------------------------------------------------------------------------------------


class AuditStepResultHumanReview(Base):
    """Append-only trail of human overrides of a step or one of its control points (spec 04 §3.4)."""

    __tablename__ = "audit_step_result_human_reviews"
    __table_args__ = (
        ForeignKeyConstraint(["audit_id", "step_position"], ["audit_step_results.audit_id", "audit_step_results.step_position"],
                             ondelete="CASCADE"),
        Index("ix_ashr_audit_step", "audit_id", "step_position"),
    )
    id: Mapped[int] = _pk()
    audit_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    step_position: Mapped[int] = mapped_column(Integer, nullable=False)
    reviewed_at: Mapped[dt.datetime | None] = mapped_column(TS, index=True)
    reviewer: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(Text, nullable=False, server_default=text("'step'"), default="step", index=True)
    control_point_index: Mapped[int | None] = mapped_column(Integer, index=True)
    point: Mapped[str | None] = mapped_column(Text)
    previous_traite: Mapped[bool | None] = mapped_column(Boolean)
    previous_conforme: Mapped[str | None] = mapped_column(Text)
    previous_score: Mapped[int | None] = mapped_column(Integer)
    previous_niveau_conformite: Mapped[str | None] = mapped_column(Text)
    override_traite: Mapped[bool | None] = mapped_column(Boolean)
    override_conforme: Mapped[str | None] = mapped_column(Text)
    override_score: Mapped[int | None] = mapped_column(Integer)
    override_niveau_conformite: Mapped[str | None] = mapped_column(Text)
    previous_statut: Mapped[str | None] = mapped_column(Text)
    previous_commentaire: Mapped[str | None] = mapped_column(Text)
    override_statut: Mapped[str | None] = mapped_column(Text)
    override_commentaire: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = _created()


class AuditStepResultRerunEvent(Base):
    """Append-only trail of step and control-point reruns (spec 04 §3.4)."""

    __tablename__ = "audit_step_result_rerun_events"
    __table_args__ = (
        ForeignKeyConstraint(["audit_id", "step_position"], ["audit_step_results.audit_id", "audit_step_results.step_position"],
                             ondelete="CASCADE"),
        Index("ix_asrre_audit_step", "audit_id", "step_position"),
    )
    id: Mapped[int] = _pk()
    audit_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    step_position: Mapped[int] = mapped_column(Integer, nullable=False)
    occurred_at: Mapped[dt.datetime | None] = mapped_column(TS, index=True)
    kind: Mapped[str] = mapped_column(Text, nullable=False, server_default=text("'unknown'"), default="unknown", index=True)
    rerun_id: Mapped[str | None] = mapped_column(Text, index=True)
    event_id: Mapped[str | None] = mapped_column(Text)
    custom_prompt: Mapped[str | None] = mapped_column(Text)
    control_point_index: Mapped[int | None] = mapped_column(Integer, index=True)
    point: Mapped[str | None] = mapped_column(Text)
    previous_score: Mapped[int | None] = mapped_column(Integer)
    previous_conforme: Mapped[str | None] = mapped_column(Text)
    previous_total_citations: Mapped[int | None] = mapped_column(Integer)
    next_score: Mapped[int | None] = mapped_column(Integer)
    next_conforme: Mapped[str | None] = mapped_column(Text)
    next_total_citations: Mapped[int | None] = mapped_column(Integer)
    previous_statut: Mapped[str | None] = mapped_column(Text)
    previous_commentaire: Mapped[str | None] = mapped_column(Text)
    previous_citations: Mapped[list[Any] | None] = mapped_column(JSONB)
    previous_step_score: Mapped[int | None] = mapped_column(Integer)
    previous_step_conforme: Mapped[str | None] = mapped_column(Text)
    next_statut: Mapped[str | None] = mapped_column(Text)
    next_commentaire: Mapped[str | None] = mapped_column(Text)
    next_citations: Mapped[list[Any] | None] = mapped_column(JSONB)
    next_step_score: Mapped[int | None] = mapped_column(Integer)
    next_step_conforme: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = _created()


class AuditBatch(Base):
    """Rewrite of the Redis batch state (spec 04 §5): one row per ``POST /api/audits/batch``."""

    __tablename__ = "audit_batches"
    id: Mapped[str] = mapped_column(Text, primary_key=True)  # batch-<epoch ms>-<n>-<random>
    audit_config_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    total: Mapped[int] = mapped_column(Integer, nullable=False)
    succeeded: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"), default=0)
    failed: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"), default=0)
    status: Mapped[str] = mapped_column(Text, nullable=False, server_default=text("'running'"), default="running", index=True)
    use_rlm: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"), default=False)
    user_id: Mapped[str | None] = mapped_column(Text)
    backfill_id: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[dt.datetime] = mapped_column(TS, nullable=False, server_default=func.now(), default=now_utc)
    completed_at: Mapped[dt.datetime | None] = mapped_column(TS)
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = _updated()


class AuditBatchItem(Base):
    """One fiche of a batch, with the tracking id of *its* audit: progress counts only these."""

    __tablename__ = "audit_batch_items"
    batch_id: Mapped[str] = mapped_column(ForeignKey("audit_batches.id", ondelete="CASCADE"), primary_key=True)
    fiche_id: Mapped[str] = mapped_column(Text, primary_key=True)
    position: Mapped[int] = mapped_column(Integer, nullable=False)
    tracking_id: Mapped[str] = mapped_column(Text, nullable=False, unique=True)
    status: Mapped[str] = mapped_column(Text, nullable=False, server_default=text("'pending'"), default="pending")
    audit_id: Mapped[int | None] = mapped_column(BigInteger)
    updated_at: Mapped[dt.datetime] = _updated()


class ChatConversation(Base):
    """Chat about an audit (``audit_id``) or about a fiche (``audit_id`` NULL), spec 04 §6."""

    __tablename__ = "chat_conversations"
    __table_args__ = (
        UniqueConstraint("fiche_id", "audit_id"),
        Index("uq_chat_conversations_fiche_level", "fiche_id", unique=True,
              postgresql_where=text("audit_id IS NULL")),
    )
    id: Mapped[int] = _pk()
    fiche_id: Mapped[str] = mapped_column(Text, nullable=False, index=True)
    audit_id: Mapped[int | None] = mapped_column(BigInteger)
    title: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = _updated()


class ChatMessage(Base):
    __tablename__ = "chat_messages"
    __table_args__ = (Index("ix_chat_messages_conversation_ts", "conversation_id", "timestamp", "id"),)
    id: Mapped[int] = _pk()
    conversation_id: Mapped[int] = mapped_column(ForeignKey("chat_conversations.id", ondelete="CASCADE"), nullable=False)
    role: Mapped[str] = mapped_column(Text, nullable=False)
    content: Mapped[str] = mapped_column(Text, nullable=False)
    timestamp: Mapped[dt.datetime] = mapped_column(TS, nullable=False, server_default=func.now(), default=now_utc)


# --------------------------------------------------------------------------------------------
# Automation: schedules, runs, per-fiche results, logs (spec 05 §1)
# --------------------------------------------------------------------------------------------

SCHEDULE_TYPES = ("MANUAL", "DAILY", "WEEKLY", "MONTHLY", "CRON")
ScheduleTypeEnum = Enum(*SCHEDULE_TYPES, name="ScheduleType")


class AutomationSchedule(Base):
    """One schedule (spec 05 §1.1); the former ``fiche_selection`` JSON lives in ``fiche_selection_*``."""

    __tablename__ = "automation_schedules"
    id: Mapped[int] = _pk()
    name: Mapped[str] = mapped_column(Text, nullable=False)
    description: Mapped[str | None] = mapped_column(Text)
    is_active: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"), default=True, index=True)
    created_by: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(TS, nullable=False, server_default=func.now(), default=now_utc,
                                                    index=True)
    updated_at: Mapped[dt.datetime] = _updated()
    schedule_type: Mapped[str] = mapped_column(ScheduleTypeEnum, nullable=False, index=True)
    cron_expression: Mapped[str | None] = mapped_column(Text)
    timezone: Mapped[str] = mapped_column(Text, nullable=False, server_default=text("'UTC'"), default="UTC")
    time_of_day: Mapped[str | None] = mapped_column(Text)
    day_of_week: Mapped[int | None] = mapped_column(Integer)
    day_of_month: Mapped[int | None] = mapped_column(Integer)
    fiche_selection_mode: Mapped[str] = mapped_column(Text, nullable=False, server_default=text("'date_range'"),
                                                      default="date_range")
    fiche_selection_date_range: Mapped[str | None] = mapped_column(Text)
    fiche_selection_custom_start_date: Mapped[str | None] = mapped_column(Text)
    fiche_selection_custom_end_date: Mapped[str | None] = mapped_column(Text)
    fiche_selection_groupes: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False, server_default=text("'{}'"),
                                                               default=list)
    fiche_selection_fiche_ids: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False,
                                                                 server_default=text("'{}'"), default=list)
    fiche_selection_only_with_recordings: Mapped[bool] = mapped_column(Boolean, nullable=False,
                                                                       server_default=text("false"), default=False)
    fiche_selection_only_unaudited: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"),
                                                                 default=False)
    fiche_selection_use_rlm: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"),
                                                          default=False)
    fiche_selection_max_fiches: Mapped[int | None] = mapped_column(Integer)
    fiche_selection_max_recordings_per_fiche: Mapped[int | None] = mapped_column(Integer)
    run_transcription: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"), default=True)
    skip_if_transcribed: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"), default=True)
    transcription_priority: Mapped[str] = mapped_column(Text, nullable=False, server_default=text("'normal'"),
                                                        default="normal")
    run_audits: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"), default=True)
    use_automatic_audits: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"), default=True)
    specific_audit_configs: Mapped[list[int] | None] = mapped_column(ARRAY(BigInteger))  # NULL = empty
    continue_on_error: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"), default=True)
    retry_failed: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"), default=False)
    max_retries: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"), default=0)
    notify_on_complete: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"), default=True)
    notify_on_error: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"), default=True)
    webhook_url: Mapped[str | None] = mapped_column(Text)
    notify_emails: Mapped[list[str] | None] = mapped_column(ARRAY(Text))  # NULL = empty
    # rewrite: sealed with db.secret_box (never stored in clear, masked in replies).
    external_api_key: Mapped[str | None] = mapped_column(Text)
    last_run_at: Mapped[dt.datetime | None] = mapped_column(TS, index=True)
    last_run_status: Mapped[str | None] = mapped_column(Text)
    # rewrite (spec 05 §2.6, optional DST fix): the last due instant, for due detection only.
    last_due_at: Mapped[dt.datetime | None] = mapped_column(TS)
    total_runs: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"), default=0)
    successful_runs: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"), default=0)
    failed_runs: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"), default=0)


class AutomationRun(Base):
    """One run of a schedule (spec 05 §1.6)."""

    __tablename__ = "automation_runs"
    id: Mapped[int] = _pk()
    schedule_id: Mapped[int] = mapped_column(
        ForeignKey("automation_schedules.id", ondelete="CASCADE"), nullable=False, index=True
    )
    status: Mapped[str] = mapped_column(Text, nullable=False, server_default=text("'running'"), default="running",
                                        index=True)
    started_at: Mapped[dt.datetime] = mapped_column(TS, nullable=False, server_default=func.now(), default=now_utc,
                                                    index=True)
    completed_at: Mapped[dt.datetime | None] = mapped_column(TS)
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    total_fiches: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"), default=0)
    successful_fiches: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"), default=0)
    failed_fiches: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"), default=0)
    transcriptions_run: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"), default=0)
    audits_run: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"), default=0)
    error_message: Mapped[str | None] = mapped_column(Text)
    error_details: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    config_snapshot: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    result_summary: Mapped[Any] = mapped_column(JSONB, nullable=True)
    # rewrite: the backing Dagster run (stale reconciliation on FAILURE/CANCELED, spec 05 §2.4).
    dagster_run_id: Mapped[str | None] = mapped_column(Text, index=True)
    # rewrite: how the run executes (spec 05 §3, DESIGN §3.4) — ``scheduled`` | ``manual``; the
    # fiches selected (the denominator of the results); one fiche backfill per attempt (retries
    # re-run only the failed fiches); the last ``automation.run.progress`` counters published.
    trigger: Mapped[str | None] = mapped_column(Text)
    selected_fiche_ids: Mapped[list[str]] = mapped_column(
        ARRAY(Text), nullable=False, server_default=text("'{}'::text[]"), default=list)
    backfill_ids: Mapped[list[str]] = mapped_column(
        ARRAY(Text), nullable=False, server_default=text("'{}'::text[]"), default=list)
    attempt: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"), default=0)
    last_progress: Mapped[dict[str, Any] | None] = mapped_column(JSONB)


class AutomationRunFicheResult(Base):
    """Exactly one row per processed fiche of a run (spec 05 §1.7). UNIQUE(run_id, fiche_id) also
    serves the lookups by run."""

    __tablename__ = "automation_run_fiche_results"
    __table_args__ = (UniqueConstraint("run_id", "fiche_id"),)
    id: Mapped[int] = _pk()
    run_id: Mapped[int] = mapped_column(ForeignKey("automation_runs.id", ondelete="CASCADE"), nullable=False)
    fiche_id: Mapped[str] = mapped_column(Text, nullable=False)
    status: Mapped[str] = mapped_column(Text, nullable=False, index=True)  # successful | failed | ignored
    error: Mapped[str | None] = mapped_column(Text)
    ignore_reason: Mapped[str | None] = mapped_column(Text)
    recordings_count: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = _created()


class AutomationLog(Base):
    """A run's log line (spec 05 §1.7, §3.11); read oldest first by run."""

    __tablename__ = "automation_logs"
    __table_args__ = (Index("ix_automation_logs_run_ts", "run_id", "timestamp", "id"),)
    id: Mapped[int] = _pk()
    run_id: Mapped[int] = mapped_column(ForeignKey("automation_runs.id", ondelete="CASCADE"), nullable=False)
    level: Mapped[str] = mapped_column(Text, nullable=False, index=True)
    message: Mapped[str] = mapped_column(Text, nullable=False)
    meta: Mapped[dict[str, Any]] = mapped_column(
        "metadata", JSONB, nullable=False, server_default=text("'{}'::jsonb"), default=dict
    )
    timestamp: Mapped[dt.datetime] = mapped_column(TS, nullable=False, server_default=func.now(), default=now_utc,
                                                   index=True)


class ApiKey(Base):
    """An API key (issue 8, spec 04 §7 adapted): only its SHA-256 is stored (the key is shown once
    at creation); ``permissions`` are ``<area>.read|write`` and verbs such as ``audits.run``;
    ``scope`` SELF (fiches attributed to ``crm_user_id``), GROUP (fiches of ``groupes``) or ALL."""

    __tablename__ = "api_keys"
    __table_args__ = (CheckConstraint("scope IN ('SELF', 'GROUP', 'ALL')", name="ck_api_keys_scope"),
                      UniqueConstraint("key_hash", name="uq_api_keys_key_hash"))
    id: Mapped[int] = _pk()
    name: Mapped[str] = mapped_column(Text, nullable=False)
    key_prefix: Mapped[str] = mapped_column(Text, nullable=False, index=True)
    key_hash: Mapped[str] = mapped_column(Text, nullable=False)
    permissions: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False, server_default=text("'{}'::text[]"),
                                                   default=list)
    scope: Mapped[str] = mapped_column(Text, nullable=False, server_default=text("'SELF'"), default="SELF")
    groupes: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False, server_default=text("'{}'::text[]"),
                                               default=list)
    crm_user_id: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = _created()
    last_used_at: Mapped[dt.datetime | None] = mapped_column(TS)
    expires_at: Mapped[dt.datetime | None] = mapped_column(TS)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(TS)


# --------------------------------------------------------------------------------------------
# Compliance reports (issue 10): written by the report assets, read by the API
# --------------------------------------------------------------------------------------------


class _ComplianceReportSections:
    """The sections of :func:`auditflow_dagster.core.reports.daily_report`, one JSONB column each,
    plus the headline numbers as columns (for listing and sorting without opening the JSON)."""

    generated_at: Mapped[dt.datetime] = mapped_column(TS, nullable=False, default=now_utc)
    dagster_run_id: Mapped[str | None] = mapped_column(Text)
    audits_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"), default=0)
    mean_score: Mapped[float | None] = mapped_column(Float)
    compliant_rate: Mapped[float | None] = mapped_column(Float)
    totals: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    niveau_counts: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    score_distribution: Mapped[list[Any]] = mapped_column(JSONB, nullable=False)
    per_groupe: Mapped[list[Any]] = mapped_column(JSONB, nullable=False)
    per_advisor: Mapped[list[Any]] = mapped_column(JSONB, nullable=False)
    critical_steps: Mapped[list[Any]] = mapped_column(JSONB, nullable=False)
    control_points: Mapped[list[Any]] = mapped_column(JSONB, nullable=False)
    top_missed_points: Mapped[list[Any]] = mapped_column(JSONB, nullable=False)
    gating: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)


class DailyComplianceReport(_ComplianceReportSections, Base):
    """``daily_compliance_report[day]``: the sales day's latest completed audits, aggregated."""

    __tablename__ = "daily_compliance_reports"
    day: Mapped[str] = mapped_column(Text, primary_key=True)  # YYYY-MM-DD (Europe/Paris sales day)


class WeeklyComplianceReport(_ComplianceReportSections, Base):
    """``weekly_compliance_report[week]``: the roll-up of the week's daily report rows."""

    __tablename__ = "weekly_compliance_reports"
    week: Mapped[str] = mapped_column(Text, primary_key=True)  # ISO week, e.g. 2026-W11
    week_start: Mapped[str] = mapped_column(Text, nullable=False)  # its Monday, YYYY-MM-DD
    days: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False, server_default=text("'{}'::text[]"),
                                            default=list)  # the days whose daily report was rolled up
