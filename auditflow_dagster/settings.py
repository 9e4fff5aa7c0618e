"""The one settings object of AuditFlow.

Every process (Dagster code location, daemon-launched runs, the API, the CLI, the synthetic CRM)
reads its configuration from environment variables through :func:`get_settings`. Legacy variable
names from the spec are kept (``FICHE_API_BASE_URL``, ``OPENAI_API_KEY`` …) because existing
deployments set them; new knobs are prefixed ``AUDITFLOW_``.

Secrets are ``SecretStr`` so that a settings object printed into a log or an error never shows
them; :func:`normalize_secret` applies the spec's key normalization (trim, strip one pair of quotes).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def normalize_secret(value: str | None) -> str:
    """Trim, remove one matching pair of wrapping quotes, trim again (spec 02 §2 "API key")."""
    if not isinstance(value, str):
        return ""
    v = value.strip()
    if len(v) >= 2 and v[0] == v[-1] and v[0] in ("'", '"'):
        v = v[1:-1]
    return v.strip()


def _env(*names: str) -> AliasChoices:
    return AliasChoices(*names)


class Settings(BaseSettings):
    """Typed view of the environment. Field names are Python names; aliases are the env vars."""

    model_config = SettingsConfigDict(extra="ignore")

    # --- where things live -------------------------------------------------------------------
    home: Path = Field(default=Path(".auditflow"), validation_alias=_env("AUDITFLOW_HOME"))
    database_url: str | None = Field(default=None, validation_alias=_env("AUDITFLOW_DATABASE_URL"))
    dagster_pg_url: str | None = Field(default=None, validation_alias=_env("AUDITFLOW_DAGSTER_PG_URL"))
    dagster_graphql_url: str = Field(
        default="http://127.0.0.1:3000/graphql", validation_alias=_env("AUDITFLOW_DAGSTER_GRAPHQL_URL")
    )
    app_env: str = Field(default="development", validation_alias=_env("APP_ENV", "NODE_ENV"))
    business_timezone: str = Field(default="Europe/Paris", validation_alias=_env("AUDITFLOW_BUSINESS_TIMEZONE"))

    # --- switches between real services and offline twins ------------------------------------
    crm_mode: Literal["http", "sample"] = Field(default="sample", validation_alias=_env("AUDITFLOW_CRM"))
    stt_mode: Literal["elevenlabs", "sample"] = Field(default="sample", validation_alias=_env("AUDITFLOW_STT"))
    llm_mode: Literal["openai", "offline"] = Field(default="offline", validation_alias=_env("AUDITFLOW_LLM"))

    # --- CRM gateway (spec 01) ---------------------------------------------------------------
    fiche_api_base_url: str | None = Field(
        default=None, validation_alias=_env("FICHE_API_BASE_URL", "FICHE_API_URL")
    )
    fiche_api_auth_token: SecretStr = Field(default=SecretStr(""), validation_alias=_env("FICHE_API_AUTH_TOKEN"))
    fiche_sales_include_recordings: bool = Field(
        default=True, validation_alias=_env("FICHE_SALES_INCLUDE_RECORDINGS")
    )
    fiche_sales_search_concurrency: int = Field(default=1, validation_alias=_env("FICHE_SALES_SEARCH_CONCURRENCY"))
    fiche_fetch_concurrency: int = Field(default=3, validation_alias=_env("FICHE_FETCH_CONCURRENCY"))
    crm_max_attempts: int = Field(default=3, validation_alias=_env("AUDITFLOW_CRM_MAX_ATTEMPTS"))
    crm_timeout_seconds: float = Field(default=60.0, validation_alias=_env("AUDITFLOW_CRM_TIMEOUT_SECONDS"))
    cache_expiration_hours: int = Field(default=240, validation_alias=_env("CACHE_EXPIRATION_HOURS"))

    # --- speech-to-text (spec 02) ------------------------------------------------------------
    elevenlabs_api_key: SecretStr = Field(default=SecretStr(""), validation_alias=_env("ELEVENLABS_API_KEY"))
    elevenlabs_base_url: str = Field(default="https://api.elevenlabs.io", validation_alias=_env("ELEVENLABS_BASE_URL"))
    elevenlabs_stt_model_id: str = Field(default="scribe_v1", validation_alias=_env("ELEVENLABS_STT_MODEL_ID"))
    transcription_max_attempts: int = Field(
        default=6, validation_alias=_env("TRANSCRIPTION_ELEVENLABS_MAX_ATTEMPTS")
    )
    transcription_backoff_base_seconds: float = Field(
        default=2.0, validation_alias=_env("TRANSCRIPTION_ELEVENLABS_BACKOFF_BASE_SECONDS")
    )
    transcription_backoff_max_seconds: float = Field(
        default=60.0, validation_alias=_env("TRANSCRIPTION_ELEVENLABS_BACKOFF_MAX_SECONDS")
    )
    transcription_download_timeout_seconds: float = Field(
        default=120.0, validation_alias=_env("TRANSCRIPTION_AUDIO_DOWNLOAD_TIMEOUT_SECONDS")
    )
    transcription_provider_timeout_seconds: float = Field(
        default=600.0, validation_alias=_env("TRANSCRIPTION_PROVIDER_TIMEOUT_SECONDS")
    )
    transcription_max_audio_bytes: int = Field(
        default=1_000_000_000, ge=1, validation_alias=_env("TRANSCRIPTION_MAX_AUDIO_BYTES")
    )
    transcription_max_recordings_per_fiche: int = Field(
        default=50, validation_alias=_env("TRANSCRIPTION_MAX_RECORDINGS_PER_FICHE")
    )
    #: Provider starts per minute across the whole system (spec 02 §2), burst ceil(limit/2).
    transcription_rate_limit_per_minute: int = Field(
        default=10, ge=1, validation_alias=_env("TRANSCRIPTION_ELEVENLABS_RATE_LIMIT_PER_MINUTE")
    )
    transcription_progress_frequency: int = Field(
        default=3, ge=1, validation_alias=_env("TRANSCRIPTION_PROGRESS_WEBHOOK_FREQUENCY")
    )
    #: How long a run waits for another run that is transcribing the same recording (its provider
    #: call and retries), before reporting the recording failed for this run.
    transcription_lock_wait_seconds: float = Field(
        default=900.0, validation_alias=_env("TRANSCRIPTION_MAX_WAIT_SECONDS")
    )
    stt_concurrency: int = Field(default=4, validation_alias=_env("AUDITFLOW_STT_CONCURRENCY"))
    transcription_per_fiche_concurrency: int = Field(
        default=3, validation_alias=_env("TRANSCRIPTION_RECORDING_PER_FICHE_CONCURRENCY")
    )

    # --- LLM (spec 03) -----------------------------------------------------------------------
    openai_api_key: SecretStr = Field(default=SecretStr(""), validation_alias=_env("OPENAI_API_KEY"))
    openai_base_url: str | None = Field(default=None, validation_alias=_env("OPENAI_BASE_URL"))
    openai_model_audit: str = Field(default="gpt-5.2", validation_alias=_env("OPENAI_MODEL_AUDIT"))
    openai_timeout_seconds: float = Field(default=600.0, validation_alias=_env("AUDITFLOW_OPENAI_TIMEOUT_SECONDS"))
    openai_max_retries: int = Field(default=3, validation_alias=_env("AUDITFLOW_OPENAI_MAX_RETRIES"))
    llm_concurrency: int = Field(default=16, validation_alias=_env("AUDITFLOW_LLM_CONCURRENCY"))
    audit_step_per_audit_concurrency: int = Field(
        default=10, validation_alias=_env("AUDIT_STEP_PER_AUDIT_CONCURRENCY")
    )
    audit_evidence_gating: bool = Field(default=True, validation_alias=_env("AUDIT_EVIDENCE_GATING"))
    audit_evidence_min_quote_chars: int = Field(
        default=12, validation_alias=_env("AUDIT_EVIDENCE_MIN_QUOTE_CHARS")
    )
    audit_step_timeline_excerpt: bool = Field(default=True, validation_alias=_env("AUDIT_STEP_TIMELINE_EXCERPT"))
    audit_step_timeline_max_chunks: int = Field(
        default=40, validation_alias=_env("AUDIT_STEP_TIMELINE_MAX_CHUNKS")
    )
    audit_watchdog_minutes: int = Field(default=30, validation_alias=_env("AUDIT_WATCHDOG_MINUTES"))
    #: Personal data (IBAN, card, NIR, phone, e-mail, date of birth) replaced by typed placeholders in
    #: everything sent to the LLM (audit snapshot, tools, chat); only an explicit 0/false/no/off disables.
    redact_pii: bool = Field(default=True, validation_alias=_env("AUDITFLOW_REDACT_PII"))
    #: ``package.module:function`` mapping a fiche's CRM details to a product (spec 03 §3.3); unset →
    #: no product catalogue: ``verifyProductInfo`` steps get verification variant C.
    product_lookup: str = Field(default="", validation_alias=_env("AUDITFLOW_PRODUCT_LOOKUP"))
    # Transcript tools mode (use_rlm, spec 03 §5); clamped where used (rounds ≥ 2, fetch 1..40, …).
    audit_tools_max_rounds: int = Field(default=8, validation_alias=_env("AUDIT_TOOLS_MAX_ROUNDS"))
    audit_tools_max_search_results: int = Field(default=25, validation_alias=_env("AUDIT_TOOLS_MAX_SEARCH_RESULTS"))
    audit_tools_max_chunk_fetch: int = Field(default=20, validation_alias=_env("AUDIT_TOOLS_MAX_CHUNK_FETCH"))
    audit_tools_max_chunk_chars: int = Field(default=20000, validation_alias=_env("AUDIT_TOOLS_MAX_CHUNK_CHARS"))
    # Chat (spec 04 §6, §8): one OpenAI client per service, built like the auditor's.
    openai_model_chat: str = Field(default="gpt-5.2", validation_alias=_env("OPENAI_MODEL_CHAT", "OPENAI_MODEL"))
    openai_temperature_chat: float = Field(default=0.0, validation_alias=_env("OPENAI_TEMPERATURE_CHAT"))
    openai_max_tokens_chat: int = Field(default=3000, validation_alias=_env("OPENAI_MAX_TOKENS_CHAT"))
    chat_max_message_chars: int = Field(default=8000, validation_alias=_env("CHAT_MAX_MESSAGE_CHARS"))

    # --- pipeline shape ----------------------------------------------------------------------
    fiches_per_run: int = Field(default=50, validation_alias=_env("AUDITFLOW_FICHES_PER_RUN"))
    fiche_concurrency: int = Field(default=8, validation_alias=_env("AUDITFLOW_FICHE_CONCURRENCY"))
    default_audit_config_name: str | None = Field(
        default=None, validation_alias=_env("AUDITFLOW_DEFAULT_AUDIT_CONFIG")
    )

    # --- fiche cache lifecycle (spec 01 §2.7, DESIGN §3.11) ------------------------------------
    fiche_force_refresh_cooldown_ms: int = Field(
        default=1_800_000, validation_alias=_env("FICHE_FORCE_REFRESH_COOLDOWN_MS")
    )
    fiche_not_found_ttl_ms: int = Field(default=300_000, validation_alias=_env("FICHE_NOT_FOUND_TTL_MS"))
    fiche_partition_retention_days: int = Field(
        default=60, validation_alias=_env("AUDITFLOW_FICHE_PARTITION_RETENTION_DAYS")
    )
    run_retention_days: int = Field(default=30, validation_alias=_env("AUDITFLOW_RUN_RETENTION_DAYS"))
    #: realtime events (the SSE outbox) older than this are pruned; 0 keeps them forever
    event_retention_hours: float = Field(default=168.0, validation_alias=_env("AUDITFLOW_EVENT_RETENTION_HOURS"))
    #: compliance reports (issue 10): a day's report is rebuilt once its audits have not changed for
    #: this long and none is pending or running
    report_settle_seconds: int = Field(default=120, validation_alias=_env("AUDITFLOW_REPORT_SETTLE_SECONDS"))
    #: the report trigger only scans audits changed within this many days (older days keep their report)
    report_lookback_days: int = Field(default=7, validation_alias=_env("AUDITFLOW_REPORT_LOOKBACK_DAYS"))

    # --- progressive date-range fetch and webhooks (spec 01 §4, §5; spec 06 §3) ---------------
    progressive_fetch_max_range_days: int = Field(
        default=93, validation_alias=_env("PROGRESSIVE_FETCH_MAX_RANGE_DAYS")
    )
    progressive_fetch_dedup_window_ms: int = Field(
        default=300_000, validation_alias=_env("PROGRESSIVE_FETCH_DEDUP_WINDOW_MS")
    )
    progressive_fetch_webhook_frequency: int = Field(
        default=5, validation_alias=_env("PROGRESSIVE_FETCH_WEBHOOK_FREQUENCY")
    )
    #: ``by-date-range?refresh=true`` re-reads only days not read from the CRM within this window
    #: (spec 01 §3: legacy had no cooldown, so a refresh loop hammered the CRM). 0 disables.
    range_refresh_cooldown_ms: int = Field(
        default=300_000, ge=0, validation_alias=_env("AUDITFLOW_RANGE_REFRESH_COOLDOWN_MS")
    )
    api_base_url: str = Field(default="http://localhost:3002", validation_alias=_env("API_BASE_URL"))
    webhook_allowed_origins: str = Field(default="", validation_alias=_env("WEBHOOK_ALLOWED_ORIGINS"))
    webhook_max_attempts: int = Field(default=3, validation_alias=_env("WEBHOOK_MAX_ATTEMPTS"))
    webhook_timeout_ms: int = Field(default=10_000, validation_alias=_env("WEBHOOK_TIMEOUT_MS"))
    #: Key that encrypts stored webhook secrets (Fernet, urlsafe base64 of 32 bytes). Unset in
    #: development: a key is generated once under $AUDITFLOW_HOME.
    secret_key: SecretStr = Field(default=SecretStr(""), validation_alias=_env("AUDITFLOW_SECRET_KEY"))

    #: SQLAlchemy pool per process (app database). Several run processes share one server's
    #: max_connections, so the pool is small and threads queue for a connection.
    db_pool_size: int = Field(default=5, ge=1, validation_alias=_env("AUDITFLOW_DB_POOL_SIZE"))
    db_max_overflow: int = Field(default=10, ge=0, validation_alias=_env("AUDITFLOW_DB_MAX_OVERFLOW"))

    # --- automation (spec 05 §2, §3, §5, §7) --------------------------------------------------
    automation_scheduler_cron: str = Field(default="*/1 * * * *", validation_alias=_env("AUTOMATION_SCHEDULER_CRON"))
    automation_scheduler_window_minutes: int = Field(
        default=20, validation_alias=_env("AUTOMATION_SCHEDULER_WINDOW_MINUTES"))
    automation_stale_threshold_ms: int = Field(
        default=18_000_000, validation_alias=_env("AUTOMATION_STALE_THRESHOLD_MS"))
    automation_scheduler_stale_grace_ms: int = Field(
        default=1_800_000, validation_alias=_env("AUTOMATION_SCHEDULER_STALE_GRACE_MS"))
    #: A day whose sales list was read from the CRM this recently is taken from the cache (spec 05 §3.3).
    automation_revalidation_cooldown_ms: int = Field(
        default=1_800_000, validation_alias=_env("AUTOMATION_REVALIDATION_COOLDOWN_MS"))
    automation_max_recordings_per_fiche: int = Field(
        default=0, validation_alias=_env("AUTOMATION_MAX_RECORDINGS_PER_FICHE"))
    automation_hard_max_recordings_per_fiche: int = Field(
        default=50, validation_alias=_env("AUTOMATION_HARD_MAX_RECORDINGS_PER_FICHE"))
    #: Signs automation webhooks (same headers as the fiches webhooks); unset ⇒ unsigned.
    automation_webhook_secret: SecretStr = Field(
        default=SecretStr(""), validation_alias=_env("AUTOMATION_WEBHOOK_SECRET"))
    smtp_host: str = Field(default="", validation_alias=_env("SMTP_HOST"))
    smtp_port: int = Field(default=587, validation_alias=_env("SMTP_PORT"))
    smtp_secure: str = Field(default="0", validation_alias=_env("SMTP_SECURE"))
    smtp_user: str = Field(default="", validation_alias=_env("SMTP_USER"))
    smtp_pass: SecretStr = Field(default=SecretStr(""), validation_alias=_env("SMTP_PASS"))
    smtp_from: str = Field(default="", validation_alias=_env("SMTP_FROM"))
    smtp_timeout_ms: int = Field(default=10_000, validation_alias=_env("SMTP_TIMEOUT_MS"))

    @field_validator("automation_scheduler_window_minutes", "automation_stale_threshold_ms",
                     "automation_scheduler_stale_grace_ms", "automation_revalidation_cooldown_ms",
                     "automation_max_recordings_per_fiche", "automation_hard_max_recordings_per_fiche",
                     "smtp_port", "smtp_timeout_ms", mode="before")
    @classmethod
    def _automation_numbers(cls, v: object, info: object) -> object:
        """Malformed numbers fall back to the default, and floors apply (spec 05 §2.6, §5.4, §7):
        legacy turned a non-numeric window into "match nothing"."""
        defaults = {"automation_scheduler_window_minutes": 20, "automation_stale_threshold_ms": 18_000_000,
                    "automation_scheduler_stale_grace_ms": 1_800_000,
                    "automation_revalidation_cooldown_ms": 1_800_000, "automation_max_recordings_per_fiche": 0,
                    "automation_hard_max_recordings_per_fiche": 50,
                    "smtp_port": 587, "smtp_timeout_ms": 10_000}
        floors = {"automation_scheduler_window_minutes": 5, "automation_stale_threshold_ms": 60_000,
                  "automation_scheduler_stale_grace_ms": 60_000,
                  "smtp_timeout_ms": 1_000, "automation_hard_max_recordings_per_fiche": 1}
        name = getattr(info, "field_name", "")
        try:
            number = int(str(v).strip().strip("'\""))
        except (TypeError, ValueError):
            return defaults[name]
        return max(floors.get(name, 0), number)

    @field_validator("smtp_host", "smtp_user", "smtp_from", "smtp_secure", mode="before")
    @classmethod
    def _smtp_text(cls, v: object) -> object:
        return normalize_secret(v) if isinstance(v, str) else v

    @property
    def automation_stale_ms(self) -> int:
        """STALE = threshold + grace (spec 05 §2.1)."""
        return self.automation_stale_threshold_ms + self.automation_scheduler_stale_grace_ms

    @field_validator("fiche_force_refresh_cooldown_ms", mode="before")
    @classmethod
    def _cooldown(cls, v: object) -> object:
        # spec 01 §2.7: 0 disables, negative → 0, junk → default
        try:
            return max(0, int(str(v).strip()))
        except (TypeError, ValueError):
            return 1_800_000

    @field_validator("openai_model_chat", mode="before")
    @classmethod
    def _chat_model(cls, v: object) -> object:
        return v.strip() if isinstance(v, str) and v.strip() else "gpt-5.2"

    @field_validator("openai_temperature_chat", "openai_max_tokens_chat", "chat_max_message_chars", mode="before")
    @classmethod
    def _chat_numbers(cls, v: object, info: object) -> object:
        # spec 04 §8: a malformed numeric value falls back to the default (legacy got NaN)
        defaults = {"openai_temperature_chat": 0.0, "openai_max_tokens_chat": 3000, "chat_max_message_chars": 8000}
        name = getattr(info, "field_name", "")
        try:
            number = float(str(v).strip())
        except (TypeError, ValueError):
            return defaults[name]
        if number != number or number in (float("inf"), float("-inf")) or number < 0:
            return defaults[name]
        if name == "openai_temperature_chat":
            return number
        return int(number) if number >= 1 else defaults[name]

    @field_validator("fiche_not_found_ttl_ms")
    @classmethod
    def _nf_floor(cls, v: int) -> int:
        return max(60_000, v)

    @field_validator("progressive_fetch_webhook_frequency")
    @classmethod
    def _freq_floor(cls, v: int) -> int:
        return max(1, v)

    @property
    def allowed_webhook_origins(self) -> list[str]:
        return [o.strip() for o in self.webhook_allowed_origins.split(",") if o.strip()]

    @property
    def is_production(self) -> bool:
        return self.app_env.strip().lower() == "production"

    # --- realtime / API ----------------------------------------------------------------------
    event_max_payload_bytes: int = Field(default=9000, validation_alias=_env("PUSHER_MAX_PAYLOAD_BYTES"))
    api_max_body_bytes: int = Field(default=1_048_576, validation_alias=_env("AUDITFLOW_API_MAX_BODY_BYTES"))
    #: Browser origins allowed by CORS (spec 06 §5.7), comma-separated, with credentials; default the
    #: local dev frontends. ``*`` allows any origin but then without credentials.
    cors_allowed_origins: str = Field(
        default="http://localhost:3000,http://localhost:3001,http://localhost:5173,http://localhost:5174",
        validation_alias=_env("AUDITFLOW_CORS_ORIGINS", "CORS_ALLOWED_ORIGINS"),
    )
    sse_heartbeat_seconds: float = Field(default=15.0, validation_alias=_env("AUDITFLOW_SSE_HEARTBEAT_SECONDS"))
    #: an open SSE stream re-checks its API key this often; revoked or expired ⇒ the stream ends
    sse_auth_recheck_seconds: float = Field(default=30.0, gt=0,
                                            validation_alias=_env("AUDITFLOW_SSE_AUTH_RECHECK_SECONDS"))
    sse_poll_seconds: float = Field(default=0.25, validation_alias=_env("AUDITFLOW_SSE_POLL_SECONDS"))
    #: How long an event id missing below visible ones is waited for (a transaction still
    #: committing) before it is taken as rolled back; later events wait behind it meanwhile.
    sse_gap_timeout_seconds: float = Field(default=10.0, gt=0, validation_alias=_env("AUDITFLOW_SSE_GAP_TIMEOUT_SECONDS"))

    # --- API authentication (issue 8, spec 04 §7 adapted: API keys + legacy machine tokens) ---
    #: ``on`` (default) | ``off``. Off exists only for the offline demo and dev: every request is an
    #: ALL-scope principal with every permission, and the API logs a loud warning at start.
    auth_mode: str = Field(default="on", validation_alias=_env("AUDITFLOW_AUTH"))
    #: Legacy machine tokens (comma-separated, both variables read, for rotation): every
    #: permission, scope ALL; sent as ``Authorization: Bearer`` or ``X-API-Key``.
    api_auth_token: SecretStr = Field(default=SecretStr(""), validation_alias=_env("API_AUTH_TOKEN"))
    api_auth_tokens: SecretStr = Field(default=SecretStr(""), validation_alias=_env("API_AUTH_TOKENS"))

    @field_validator("auth_mode", mode="before")
    @classmethod
    def _auth_mode(cls, v: object) -> object:
        # Anything but an explicit off value keeps auth on (fail closed).
        if isinstance(v, str) and v.strip().lower() in ("off", "0", "false", "no", "disabled"):
            return "off"
        return "on"

    @property
    def cors_origins(self) -> list[str]:
        return [o.strip().rstrip("/") for o in self.cors_allowed_origins.split(",") if o.strip()]

    @property
    def auth_enabled(self) -> bool:
        return self.auth_mode != "off"

    @property
    def machine_tokens(self) -> list[str]:
        raw = f"{self.api_auth_token.get_secret_value()},{self.api_auth_tokens.get_secret_value()}"
        return [t for t in (normalize_secret(part) for part in raw.split(",")) if t]

    @field_validator("fiche_api_auth_token", "elevenlabs_api_key", "openai_api_key", mode="before")
    @classmethod
    def _normalize_secret(cls, v: object) -> object:
        if isinstance(v, SecretStr):
            v = v.get_secret_value()
        return SecretStr(normalize_secret(v)) if isinstance(v, str) else v

    @field_validator("audit_evidence_gating", "audit_step_timeline_excerpt", "fiche_sales_include_recordings", "redact_pii",
                     mode="before")
    @classmethod
    def _legacy_flag(cls, v: object) -> object:
        # Legacy flags are "0"/"1" strings; only an explicit "0"/"false"/"no"/"off" turns one off.
        if isinstance(v, str):
            return v.strip().lower() not in ("0", "false", "no", "off")
        return v

    @field_validator("audit_step_timeline_max_chunks")
    @classmethod
    def _min_chunks(cls, v: int) -> int:
        return max(10, v)

    @property
    def home_dir(self) -> Path:
        return self.home.resolve()

    @property
    def dagster_home(self) -> Path:
        return Path(os.environ.get("DAGSTER_HOME") or (self.home_dir / "dagster_home"))


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings; tests call ``get_settings.cache_clear()`` after changing env."""
    return Settings()
