"""Settings of the provision log beyond those every service has (``JUKINET_LOG_*``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.provision_log.checkpoint import DEFAULT_ORIGIN
from services.provision_log.domain import DEFAULT_RETENTION_YEARS


class LogSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="JUKINET_LOG_", extra="ignore")

    origin: str = DEFAULT_ORIGIN  # first line of every checkpoint: names this log
    checkpoint_seconds: float = Field(default=1.0, gt=0)  # a new signed checkpoint at most this often, when the tree grew
    retention_years: int = Field(default=DEFAULT_RETENTION_YEARS, ge=1)  # entry contents are erased after this; hashes stay
    expiry_check_seconds: float = Field(default=3600.0, gt=0)  # how often expiry runs
    portal_session_seconds: int = Field(default=3600, ge=60, le=24 * 3600)  # lifetime of the portal's session cookie
