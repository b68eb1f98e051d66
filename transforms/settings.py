"""Typed runtime settings (environment prefix ``REPUTATION_``).

Settings say *where* and *how* the pipeline runs (lake root, time zone, keys);
the policy file says *what* it decides (weights, thresholds). Keeping them apart
means a policy change is versioned and reviewable, while deployments differ only
in settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from transforms.errors import ConfigError
from transforms.parallel import MIN_PARALLEL_BYTES, MIN_PARALLEL_ROWS

#: The key used when none is configured outside production. It is public (it is in
#: this file), so pseudonyms made with it protect nothing against someone with the
#: repository; every run that uses it says so in the manifest and the logs.
DEVELOPMENT_PSEUDONYM_KEY = "development-only-key-not-secret"


class Settings(BaseSettings):
    """Runtime settings of one pipeline run.

    Attributes
    ----------
    root
        Lake root: a local folder or an object-store URL (``s3://bucket/prefix``).
    business_timezone
        IANA zone of the platform's business day (``dt``, ``sales.date``, ``score_date``).
    policy_path
        Policy YAML file; ``None`` uses the packaged active policy.
    shadow_policy_path
        Optional candidate policy run beside the active one (shadow mode).
    pseudonym_key
        Secret key for the keyed hash of personal identifiers.
    environment
        ``production`` refuses to run without a configured pseudonym key.
    workers
        Processes that stage and validate sources side by side in one run; ``None`` (the
        default) is one per CPU core. Outputs do not depend on it.
    parallel_min_bytes, parallel_min_rows
        Below this many bytes of landing files to stage (rows to validate) a step stays in
        one process: a worker first spends seconds importing Polars and Great Expectations.
    """

    model_config = SettingsConfigDict(env_prefix="REPUTATION_", extra="ignore")

    root: str = "data/lake"
    business_timezone: str = "UTC"
    policy_path: Path | None = None
    shadow_policy_path: Path | None = None
    pseudonym_key: SecretStr | None = None
    environment: Literal["development", "production"] = "development"
    log_format: Literal["text", "json"] = "text"
    csv_encodings: list[str] = Field(default_factory=lambda: ["utf-8", "gb18030"])
    workers: int | None = Field(default=None, ge=1)
    parallel_min_bytes: int = Field(default=MIN_PARALLEL_BYTES, ge=0)
    parallel_min_rows: int = Field(default=MIN_PARALLEL_ROWS, ge=0)

    @field_validator("business_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}; use an IANA name such as 'Asia/Shanghai'") from exc
        return value

    @property
    def tz(self) -> ZoneInfo:
        """The business time zone as a :class:`~zoneinfo.ZoneInfo`."""
        return ZoneInfo(self.business_timezone)

    def pseudonym_key_bytes(self) -> tuple[bytes, bool]:
        """Return the pseudonymisation key and whether it is the development key.

        Raises
        ------
        ConfigError
            In production when no key is configured.
        """
        if self.pseudonym_key is not None and self.pseudonym_key.get_secret_value():
            return self.pseudonym_key.get_secret_value().encode(), False
        if self.environment == "production":
            raise ConfigError(
                "no pseudonymisation key configured in production",
                hint="set REPUTATION_PSEUDONYM_KEY (or the Airflow Variable reputation_pseudonym_key)",
            )
        return DEVELOPMENT_PSEUDONYM_KEY.encode(), True


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment plus explicit overrides.

    Raises
    ------
    ConfigError
        When a setting does not validate; the message names the setting.
    """
    from pydantic import ValidationError

    clean = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**clean)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"REPUTATION_{'.'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from None
