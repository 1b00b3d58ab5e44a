"""All configuration in one place.

Every field is read from a `WOOFLOW_<NAME>` environment variable (or a `.env` file).
The three connection strings also accept the conventional unprefixed names
(`KAFKA_BOOTSTRAP_SERVERS`, `DATABASE_URL`, `SCHEMA_REGISTRY_URL`) because that is
what platform teams already export; an explicit `WOOFLOW_` variable wins.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def _env(name: str) -> AliasChoices:
    return AliasChoices(f"WOOFLOW_{name}", name)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="WOOFLOW_", env_file=".env", extra="ignore", populate_by_name=True
    )

    # --- connections ---------------------------------------------------------------
    kafka_bootstrap_servers: str = Field(
        "localhost:9092", validation_alias=_env("KAFKA_BOOTSTRAP_SERVERS"),
        description="Kafka bootstrap servers (host:port,...)",
    )
    database_url: str = Field(
        "postgresql+psycopg://postgres@localhost:5432/wooflow",
        validation_alias=_env("DATABASE_URL"),
        description="SQLAlchemy URL of the PostgreSQL database",
    )
    schema_registry_url: str | None = Field(
        None, validation_alias=_env("SCHEMA_REGISTRY_URL"),
        description="When set, events use the Confluent wire format and this registry",
    )

    # --- topics --------------------------------------------------------------------
    topic_prefix: str = Field("", description="Prefix for every topic name (isolates tenants/tests)")
    topic_partitions: int = Field(12, description="Partitions of the event and command topics")
    topic_replication: int = Field(1, description="Replication factor for created topics")
    topic_retention_ms: int = Field(7 * 24 * 3600 * 1000, description="Retention of event topics")
    logs_retention_ms: int = Field(3 * 24 * 3600 * 1000, description="Retention of automation.logs")
    dlq_retention_ms: int = Field(30 * 24 * 3600 * 1000, description="Retention of automation.dlq")

    # --- consumer groups -----------------------------------------------------------
    rules_group: str = Field("wooflow-rules", description="Consumer group of the rule consumers")
    workers_group: str = Field("wooflow-workers", description="Consumer group of the action workers")
    sink_group: str = Field("wooflow-sink", description="Consumer group of the log sink")
    batch_size: int = Field(500, description="Max messages per consumer batch")
    batch_timeout_s: float = Field(0.2, description="Max wait to fill a consumer batch")
    transactional: bool = Field(False, description="Rule consumer uses Kafka transactions (exactly-once)")

    # --- bridge --------------------------------------------------------------------
    bridge_host: str = Field("0.0.0.0", description="Bridge listen address")
    bridge_port: int = Field(8080, description="Bridge listen port (WooCommerce only delivers to 80/443/8080)")
    max_body_bytes: int = Field(2 * 1024 * 1024, description="Largest webhook body accepted (413 above)")
    store_cache_ttl_s: float = Field(5.0, description="How long the bridge caches a store row")
    delivery_timeout_s: float = Field(10.0, description="Bridge waits this long for Kafka acks")

    # --- workers -------------------------------------------------------------------
    worker_concurrency: int = Field(64, description="Actions executed concurrently per worker")
    action_timeout_s: float = Field(10.0, description="Default per-action timeout")
    action_max_attempts: int = Field(5, description="Attempts before a command goes to the DLQ")
    action_lease_s: float = Field(60.0, description="A claimed execution is considered abandoned after this")
    allow_private_webhooks: bool = Field(False, description="Let outbound webhooks reach private/loopback addresses")
    webhook_allowlist: str = Field("", description="Comma-separated hosts/CIDRs outbound webhooks may reach even if private")

    # --- api / metrics -------------------------------------------------------------
    api_host: str = Field("0.0.0.0", description="Admin API listen address")
    api_port: int = Field(8000, description="Admin API listen port")
    metrics_port: int = Field(0, description="Prometheus /metrics port for non-HTTP roles (0 = off)")
    admin_token: SecretStr | None = Field(None, description="Token with access to every store (operators)")

    # --- local launcher ------------------------------------------------------------
    state_dir: Path = Field(Path.home() / ".local" / "state" / "wooflow",
                            description="Where `wooflow dev up` keeps data, logs and pids")
    cache_dir: Path = Field(Path.home() / ".cache" / "wooflow",
                            description="Where fetched Kafka jars are cached")

    log_level: str = Field("INFO", description="Python log level")

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
