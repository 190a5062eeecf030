"""The server's settings: one validated object read from `STEERBOARD_*` variables and `.env`."""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from trainer_agent.protocol import Keys

# Values people paste from examples; a token like these protects nothing.
_PLACEHOLDER_TOKENS = frozenset({"", "changeme", "change-me", "secret", "token", "password", "xxx"})
# Session-signing keys copied from examples and framework docs.
_PLACEHOLDER_SECRETS = _PLACEHOLDER_TOKENS | frozenset({
    "dev", "development", "test", "insecure", "secret-key", "secret_key", "secretkey", "your-secret-key",
    "your_secret_key", "change-this", "changethis", "please-change-me", "replace-me", "supersecret",
    "mysecret", "default", "steerboard",
})
_MIN_SECRET_CHARS = 16


class Settings(BaseSettings):
    """Everything the server, the ingest workers and the CLI can be told.

    Every field maps to an environment variable `STEERBOARD_<NAME>` (e.g. `STEERBOARD_DATABASE_URL`).
    """

    model_config = SettingsConfigDict(
        env_prefix="STEERBOARD_", env_file=".env", extra="ignore", env_ignore_empty=True
    )

    database_url: str = Field(
        "sqlite:///./steerboard-data/steerboard.db",
        description="SQLAlchemy URL: a SQLite file (default) or postgresql+psycopg://user@host/db",
    )
    redis_url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = "steerboard:"
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    log_level: str = "INFO"

    # Steering: a bearer token for scripts; unset means local dev mode (everyone may steer).
    api_token: SecretStr | None = None
    api_token_name: str = "token"

    # Signs the session cookie of people who log in. Unset: a random key per process (dev only:
    # sessions end when the process restarts and are not shared between web processes).
    secret_key: SecretStr | None = None
    session_max_age_s: int = Field(14 * 24 * 3600, ge=60, le=366 * 24 * 3600, description="how long a login lasts")
    session_https_only: bool = Field(
        False, description="always mark the session cookie Secure (it is whenever the request is https anyway)"
    )

    # Who may do what without a login (server.auth).
    dev_mode: Literal["auto", "on", "off"] = Field(
        "auto",
        description="local dev mode, where loopback clients steer without a login: auto = only while the server "
        "has never had a user or token; on = always (logins still work); off = never",
    )
    public_read: bool = Field(
        False, description="anyone who can reach the server may view runs (not steer) without a login"
    )
    # Host headers answered (DNS rebinding): localhost names, the bind address, and these ("*": any).
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="extra Host names, comma-separated"
    )
    # Proxies whose X-Forwarded-For / X-Forwarded-Proto are believed (comma-separated IPs or networks, "*":
    # any). Empty: none, so a client cannot claim another address or https.
    forwarded_allow_ips: str = ""

    # Logins: failed attempts allowed per user name and per client address within login_window_s; past
    # either, the login answers 429 with Retry-After until the window ends. Password hashes checked at once.
    login_failures_per_user: int = Field(5, ge=1, le=10_000)
    login_failures_per_address: int = Field(20, ge=1, le=100_000)
    login_window_s: int = Field(300, ge=1, le=86_400)
    password_hash_concurrency: int = Field(2, ge=1, le=64, description="argon2 checks at once (64 MiB each)")
    password_hash_wait_s: float = Field(10.0, gt=0, description="a login waiting longer for a slot gets 503")

    # Ingest worker.
    ingest_batch: int = Field(500, ge=1, le=10_000, description="entries per XREADGROUP")
    ingest_block_ms: int = Field(1000, ge=1, description="XREADGROUP block time")
    ingest_claim_idle_ms: int = Field(
        60_000, ge=1, description="XAUTOCLAIM entries another consumer left pending this long"
    )
    ingest_claim_interval_s: float = Field(5.0, gt=0, description="how often a worker runs XAUTOCLAIM")
    ingest_max_bytes: int = Field(1 << 20, ge=1024, description="larger entries are dead-lettered")
    ingest_group: str = "ingest"
    ingest_consumer_idle_ms: int = Field(
        3_600_000, ge=1000, description="a live worker removes group consumers idle this long with nothing pending"
    )
    ingest_maintenance_interval_s: float = Field(60.0, gt=0, description="how often a worker runs that cleanup")

    # Retention (server/store/retention.py): the raw per-arm rows of runs that ended more than this many
    # days ago are dropped by the ingest workers (hourly) or `steerboard db prune`; the rollups stay.
    retention_raw_days: float | None = Field(None, gt=0, description="unset: raw rows are kept forever")
    retention_interval_s: float = Field(3600.0, gt=0, description="how often a worker prunes")

    # Stream lengths (XADD MAXLEN ~).
    ingest_maxlen: int = 1_000_000
    control_maxlen: int = 10_000
    dead_maxlen: int = 100_000

    # A running run not heard from for this long is shown as stale.
    stale_seconds: float = Field(60.0, gt=0)

    # SSE: a reconnecting page that missed more events than this reloads instead of replaying.
    sse_replay_limit: int = Field(2000, ge=1)
    sse_ping_s: float = Field(15.0, gt=0)

    # Diagnoses of arms (docs/diagnosis.md has the reasoning behind each default).
    diagnosis_window: int = Field(20, ge=2, description="steps of the decayed means (lambda = 1 - 1/window)")
    diagnosis_confirm_steps: int = Field(5, ge=1, description="steps a new diagnosis must hold before it is one")
    diagnosis_min_samples: int = Field(64, ge=1, description="completions an arm needs before any diagnosis")
    diagnosis_saturated_accuracy: float = Field(0.9, ge=0, le=1)
    diagnosis_too_hard_accuracy: float = Field(0.1, ge=0, le=1)
    diagnosis_low_signal_zero_var: float = Field(0.7, ge=0, le=1)
    diagnosis_low_signal_abs_adv: float = Field(0.25, ge=0)
    diagnosis_high_signal_zero_var: float = Field(0.5, ge=0, le=1)
    diagnosis_high_signal_abs_adv: float = Field(0.4, ge=0)
    diagnosis_starved_share: float = Field(0.25, gt=0, le=1, description="starved below this x an equal share")
    diagnosis_unstable_ratio: float = Field(3.0, gt=0)
    diagnosis_regress_drop: float = Field(0.15, gt=0, le=1)
    suggest_boost_factor: float = Field(2.0, gt=1)
    suggest_boost_steps: int = Field(50, ge=1)
    suggest_lower_factor: float = Field(0.25, gt=0, lt=1)
    suggest_lower_steps: int = Field(200, ge=1)

    # Alerts (server/alerts.py): a webhook POSTed on diagnosis changes and on runs that fail or go stale.
    alert_webhook_url: SecretStr | None = Field(None, description="unset: no alerts (a Slack webhook URL is a secret)")
    alert_format: Literal["json", "slack"] = Field("json", description="json: the alert's fields; slack: {\"text\"}")
    alert_projects: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="only runs of these projects, comma-separated (empty: every project)"
    )
    alert_diagnoses: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["saturated", "too_hard", "starved", "unstable", "regressing"],
        description="the diagnoses whose arrival alerts, comma-separated",
    )
    alert_base_url: str = Field("", description="the server's public URL, for links to the run (e.g. https://sb.example)")
    alert_max_attempts: int = Field(8, ge=1, le=100)
    alert_backoff_s: float = Field(1.0, gt=0, description="the first retry's wait, doubled each retry")
    alert_backoff_max_s: float = Field(300.0, gt=0)
    alert_timeout_s: float = Field(5.0, gt=0)
    alert_stale_check_s: float = Field(15.0, gt=0, description="how often runs are checked for going stale")
    alert_maxlen: int = Field(100_000, ge=100, description="alert jobs kept in Redis (XADD MAXLEN ~)")

    @field_validator("api_token")
    @classmethod
    def _no_placeholder(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and v.get_secret_value().strip().lower() in _PLACEHOLDER_TOKENS:
            raise ValueError("STEERBOARD_API_TOKEN is a placeholder; set a real secret or leave it unset")
        return v

    @field_validator("alert_projects", "alert_diagnoses", mode="before")
    @classmethod
    def _comma_list(cls, v: object) -> object:
        if isinstance(v, str):
            return [x.strip() for x in v.split(",") if x.strip()]
        return v

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _comma_separated(cls, v: object) -> object:
        if isinstance(v, str):
            return [h.strip().lower() for h in v.split(",") if h.strip()]
        return v

    @field_validator("secret_key")
    @classmethod
    def _real_secret(cls, v: SecretStr | None) -> SecretStr | None:
        if v is None:
            return v
        raw = v.get_secret_value().strip()
        if raw.lower() in _PLACEHOLDER_SECRETS or len(set(raw)) <= 2:
            raise ValueError("STEERBOARD_SECRET_KEY is a placeholder; generate one: python -c "
                             "'import secrets; print(secrets.token_urlsafe(32))'")
        if len(raw) < _MIN_SECRET_CHARS:
            raise ValueError(f"STEERBOARD_SECRET_KEY is too short (at least {_MIN_SECRET_CHARS} characters)")
        return v

    @property
    def keys(self) -> Keys:
        """The Redis key layout under `key_prefix` (trainer_agent.protocol owns it)."""
        return Keys(self.key_prefix)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read once)."""
    return Settings.model_validate({})
