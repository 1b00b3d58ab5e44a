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
    # One declaration per setting (default, description): alike in shape, nothing to share.
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
    # bench/rules: 2000 gives ~1.45x the events/s of 500
    batch_size: int = Field(2000, description="Max messages per consumer batch")
    batch_timeout_s: float = Field(0.2, description="How long an idle consumer waits for a first message before it "
                                                    "checks in (a batch never waits to fill: it takes what is there)")
    stall_refetch_s: float = Field(30.0, description="A partition whose fetch has not moved for this long while "
                                                     "messages wait is fetched again (0 = never)")
    transactional: bool = Field(False, description="Rule consumer uses Kafka transactions (exactly-once)")
    # rule consumer
    rules_reload_s: float = Field(5.0, description="Fallback rule reload check (LISTEN/NOTIFY is the fast path)")
    # bench/scale: a cached customer costs ~1.9 KB; 200,000 of them alone were ~375 MB with
    # 5,000,000 customers, where the cache hardly hits. 10,000 against 50,000, 2 runs each:
    # bench/rules' catalogue 13,780 vs 13,776 events/s (RSS 221 vs 260 MB), the scale
    # catalogue 8,108 vs 6,086 events/s (RSS 464 vs 597 MB): a bigger cache only costs memory
    state_cache_rows: int = Field(10_000, ge=0, description="Customers (and orders) the rule consumer keeps "
                                                           "between batches (row versions are still checked)")
    instance_id: str = Field("", description="Stable id of this consumer instance (e.g. the StatefulSet pod name): "
                                             "static group membership and a fencing transactional.id")
    # product catalog (consumer/catalog.py)
    catalog_fetch_timeout_s: float = Field(2.0, description="How long a rule-consumer batch waits for stores to "
                                                            "describe products missing from the catalog (REST)")
    catalog_retry_s: float = Field(30.0, description="After a store failed to answer, how long its missing "
                                                     "products stay unknown before it is asked again")
    catalog_ttl_s: float = Field(60.0, description="How long a rule consumer trusts its in-memory copy of a "
                                                   "catalog row before reading it again")

    # --- bridge --------------------------------------------------------------------
    bridge_host: str = Field("0.0.0.0", description="Bridge listen address")
    bridge_port: int = Field(8080, description="Bridge listen port (WooCommerce only delivers to 80/443/8080)")
    bridge_forwarded_allow_ips: str = Field(
        "127.0.0.1", description="Proxies (comma-separated IPs/CIDRs, or *) whose X-Forwarded-For the bridge "
                                 "trusts for the storefront's per-IP rate limit: set to your ingress' addresses")
    max_body_bytes: int = Field(2 * 1024 * 1024, description="Largest webhook body accepted (413 above)")
    store_cache_ttl_s: float = Field(5.0, description="How long the bridge caches a store row")
    delivery_timeout_s: float = Field(10.0, description="Bridge waits this long for Kafka acks")
    # durability, dedupe, reconciliation, storefront
    outbox_max_rows: int = Field(200_000, description="Bridge outbox bound during a Kafka outage (503 beyond)")
    outbox_drain_batch: int = Field(1000, description="Outbox rows produced per drain step")
    kafka_probe_interval_s: float = Field(0.5, description="How often the bridge probes a broker it believes down")
    dedupe_retention_days: int = Field(30, description="How long the bridge remembers event ids it let in")
    claim_stale_s: float = Field(30.0, description="A claimed event not acknowledged within this is claimable again")
    raw_json_max_bytes: int = Field(65536, description="Webhook bodies up to this size travel as raw_json in events")
    bridge_public_url: str = Field("", description="Public base URL of the bridge (webhooks created by `stores add`)")
    rest_timeout_s: float = Field(30.0, description="WooCommerce REST timeout (backfill, poller, action fetches)")
    rest_max_attempts: int = Field(6, description="WooCommerce REST attempts on 429/5xx/network errors")
    poll_interval_s: float = Field(300.0, description="Reconciliation poller period")
    poll_overlap_s: float = Field(120.0, description="Poller re-reads this much before its watermark")
    note_lookup_orders: int = Field(20, description="An order note webhook names only the note: the bridge looks "
                                                    "for it among this many most recently modified orders")
    storefront_rate_per_s: float = Field(10.0, description="Storefront events per second per IP and per session")
    storefront_burst: int = Field(40, description="Storefront rate-limit burst")

    # --- workers -------------------------------------------------------------------
    worker_concurrency: int = Field(256, description="Actions executed concurrently per worker")
    action_timeout_s: float = Field(10.0, description="Default per-action timeout")
    action_max_attempts: int = Field(5, description="Attempts before a command goes to the DLQ")
    action_lease_s: float = Field(30.0, description="A claim whose worker stopped renewing it is recovered after this")
    action_lease_renew_s: float = Field(0.0, description="How often a worker renews the leases of the actions it runs "
                                                         "(0: a third of action_lease_s; at most a third)")
    allow_private_webhooks: bool = Field(False, description="Let outbound webhooks reach private/loopback addresses")
    webhook_allowlist: str = Field(
        "", description="Comma-separated hosts/CIDRs outbound webhooks may reach even if private")
    # (workers) pipelining, retries, delays, email/SMS, consent, log retention
    worker_max_inflight: int = Field(
        20000, description="Commands a worker holds (queued + running) before it stops reading")
    worker_commit_interval_s: float = Field(
        0.5, description="How often a worker commits the offsets of finished commands")
    action_retry_base_s: float = Field(2.0, description="Backoff of the first retry; doubles per attempt (with jitter)")
    action_retry_max_s: float = Field(300.0, description="Longest backoff between two attempts")
    deferred_poll_s: float = Field(
        0.5, description="How often workers re-produce due deferred commands (delays, retries)")
    public_base_url: str = Field("http://localhost:8000", description="Public base URL of the API (unsubscribe links)")
    unsubscribe_secret: SecretStr | None = Field(None, description="Key signing unsubscribe links (default: derived "
                                                                   "from each store's webhook secret)")
    consent_checker: str = Field("", description="Consent check: 'module:Class' or a `wooflow.consent` entry point "
                                                 "name (default: the consents table)")
    smtp_host: str = Field("localhost", description="Default SMTP server (a store's settings.smtp overrides)")
    smtp_port: int = Field(25, description="Default SMTP port")
    smtp_username: str = Field("", description="Default SMTP user (empty: no AUTH)")
    smtp_password: SecretStr | None = Field(None, description="Default SMTP password")
    smtp_security: str = Field("none", description="none | starttls | tls")
    smtp_from: str = Field("wooflow@localhost", description="Default sender address")
    smtp_timeout_s: float = Field(30.0, description="SMTP connect/command timeout")
    sms_provider: str = Field("http", description="Default SMS provider (`wooflow.sms_providers` entry point name)")
    sms_http_url: str = Field("", description="Generic HTTP SMS provider endpoint")
    sms_http_token: SecretStr | None = Field(None, description="Bearer token of the generic HTTP SMS provider")
    sms_sender: str = Field("", description="Default SMS sender id")
    execution_log_retention_days: int | None = Field(None, description="The log sink deletes execution logs older "
                                                                       "than this (unset: keep)")

    # --- api / metrics -------------------------------------------------------------
    api_host: str = Field("0.0.0.0", description="Admin API listen address")
    api_port: int = Field(8000, description="Admin API listen port")
    metrics_port: int = Field(0, description="Prometheus /metrics port for non-HTTP roles (0 = off)")
    metrics_store_label: bool = Field(True, description="Label metrics per store; false puts every store under "
                                                        "store=\"all\" (bounds cardinality for many stores)")
    lag_interval_s: float = Field(15.0, description="How often consuming roles report consumer lag")
    admin_token: SecretStr | None = Field(None, description="Token with access to every store (operators)")
    api_forwarded_allow_ips: str = Field(
        "127.0.0.1", description="Proxies (comma-separated IPs/CIDRs, or *) whose X-Forwarded-For the API trusts "
                                 "(the tracking links' per-IP rate limit): set to your ingress' addresses")

    # --- analytics: open and click tracking -----------------------------------------
    tracking_secret: SecretStr | None = Field(None, description="Key signing open/click tracking links (default: "
                                                                "each store's own link key)")
    tracking_link_ttl_days: int = Field(180, ge=1, description="Tracking links in messages expire after this")
    tracking_rate_per_s: float = Field(20.0, description="Tracking hits per second per client address (429 above)")
    tracking_burst: int = Field(100, description="Tracking rate-limit burst per client address")

    # --- scheduler: delayed steps, carts, time/behaviour triggers ---------
    clock: str = Field("system", description="Time source of rules + scheduler: 'system', or 'file:PATH' (simulated "
                                             "time shared by processes: the file holds an ISO-8601 instant)")
    scheduler_group: str = Field("wooflow-scheduler", description="Consumer group of the scheduler's activity reader")
    scheduler_batch_size: int = Field(2000, description="Due steps claimed per scheduler round")
    scheduler_threads: int = Field(2, ge=1, le=16, description="Emitter loops per scheduler process (each claims "
                                                               "its own batches; overlaps database and Kafka waits)")
    scheduler_poll_s: float = Field(0.1, description="Scheduler wait between rounds when nothing is due")
    scheduler_lease_s: float = Field(30.0, description="Longest a scheduler may hold a claimed batch (Kafka flush "
                                                       "timeout; PostgreSQL ends a session idle in its claim longer)")
    scheduler_scan_interval_s: float = Field(30.0, description="Period of the cart / time / behaviour trigger scan")
    activity_retention_days: int = Field(90, description="Storefront activity kept for behaviour triggers")
    scheduler_stores: str = Field("", description="Comma-separated store ids this scheduler emits and scans for "
                                                  "(default: every store)")

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
