"""PostgreSQL tables (SQLAlchemy Core). Schema changes go through Alembic migrations
in `migrations/versions/`; this file mirrors the latest migration for queries."""

from __future__ import annotations

from sqlalchemy import (BigInteger, Boolean, Column, DateTime, Double, ForeignKey, Index, Integer,
                        MetaData, Numeric, String, Table, Text, func, text)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

metadata = MetaData()

stores = Table(
    "stores", metadata,
    Column("id", String(64), primary_key=True),
    Column("name", Text, nullable=False, server_default=""),
    Column("url", Text, nullable=False),
    Column("webhook_secret", Text, nullable=False),
    Column("consumer_key", Text, nullable=False, server_default=""),
    Column("consumer_secret", Text, nullable=False, server_default=""),
    Column("timezone", Text, nullable=False, server_default="UTC"),
    Column("currency", Text, nullable=False, server_default="USD"),
    Column("public_key", Text, nullable=False, server_default=""),
    Column("settings", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

rules = Table(
    "rules", metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("store_id", String(64), ForeignKey("stores.id", ondelete="CASCADE"), nullable=False),
    Column("name", Text, nullable=False),
    Column("trigger", Text, nullable=False),
    Column("trigger_options", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("conditions", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("actions", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    Column("priority", Integer, nullable=False, server_default="10"),
    Column("enabled", Boolean, nullable=False, server_default=text("true")),
    Column("group_label", Text, nullable=False, server_default=""),
    Column("frequency", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("exit_conditions", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    Column("version", Integer, nullable=False, server_default="1"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_rules_match", "store_id", "enabled", "trigger", "priority", "group_label"),
)

customer_state = Table(
    "customer_state", metadata,
    Column("store_id", String(64), primary_key=True),
    Column("customer_key", Text, primary_key=True),
    Column("customer_id", BigInteger, nullable=True),
    Column("email", Text, nullable=True),
    Column("order_count", Integer, nullable=False, server_default="0"),
    Column("totals", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("first_order_at", DateTime(timezone=True), nullable=True),
    Column("last_order_at", DateTime(timezone=True), nullable=True),
    Column("tier", Text, nullable=False, server_default=""),
    Column("points", BigInteger, nullable=False, server_default="0"),
    Column("tags", ARRAY(Text), nullable=False, server_default=text("'{}'::text[]")),
    Column("view_counts", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("attributes", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

action_executions = Table(
    "action_executions", metadata,
    Column("idempotency_key", Text, primary_key=True),
    Column("store_id", String(64), nullable=False),
    Column("rule_id", BigInteger, nullable=False),
    Column("event_id", Text, nullable=False),
    Column("step", Integer, nullable=False),
    Column("action_type", Text, nullable=False),
    Column("status", Text, nullable=False),  # running | succeeded | failed | skipped | dead_lettered
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("lease_until", DateTime(timezone=True), nullable=True),
    Column("result", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("error", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Index("ix_action_executions_store_rule", "store_id", "rule_id"),
)

execution_logs = Table(
    "execution_logs", metadata,
    Column("log_id", Text, primary_key=True),
    Column("idempotency_key", Text, nullable=False),
    Column("store_id", String(64), nullable=False),
    Column("customer_key", Text, nullable=False),
    Column("rule_id", BigInteger, nullable=False),
    Column("event_id", Text, nullable=False),
    Column("step", Integer, nullable=False),
    Column("action_type", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("message", Text, nullable=False, server_default=""),
    Column("attempt", Integer, nullable=False, server_default="1"),
    Column("duration_ms", Double, nullable=False, server_default="0"),
    Column("dry_run", Boolean, nullable=False, server_default=text("false")),
    Column("details", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("executed_at", DateTime(timezone=True), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=True),
    Column("logged_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_execution_logs_store_time", "store_id", "executed_at"),
    Index("ix_execution_logs_rule", "store_id", "rule_id", "executed_at"),
)

api_tokens = Table(
    "api_tokens", metadata,
    Column("token_hash", Text, primary_key=True),  # sha256 of the token: the token itself is never stored
    Column("store_id", String(64), ForeignKey("stores.id", ondelete="CASCADE"), nullable=True),  # NULL = operator
    Column("name", Text, nullable=False, server_default=""),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# --- scheduler (0005) ---------------------------------------------------------------
scheduled_steps = Table(
    "scheduled_steps", metadata,
    Column("idempotency_key", Text, primary_key=True),
    Column("store_id", String(64), nullable=False),
    Column("customer_key", Text, nullable=False),
    Column("rule_id", BigInteger, nullable=False),
    Column("event_id", Text, nullable=False),
    Column("step", Integer, nullable=False),
    Column("due_at", DateTime(timezone=True), nullable=False),
    Column("command", JSONB, nullable=False),  # the ActionCommand record, JSON-encoded (see scheduler/steps.py)
    Column("status", Text, nullable=False, server_default="pending"),  # pending | emitted | exited
    Column("claimed_by", Text, nullable=True),
    Column("claimed_until", DateTime(timezone=True), nullable=True),
    Column("emitted_at", DateTime(timezone=True), nullable=True),
    Column("exit_reason", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_scheduled_steps_due", "due_at", postgresql_where=text("status = 'pending'")),
    Index("ix_scheduled_steps_run", "store_id", "rule_id", "event_id"),
)

# --- ops (0006) -----------------------------------------------------------------------
dlq_redrives = Table(
    "dlq_redrives", metadata,
    Column("dlq_id", Text, primary_key=True),
    Column("source_topic", Text, nullable=False),
    Column("source_partition", Integer, nullable=False),
    Column("source_offset", BigInteger, nullable=False),
    Column("reason", Text, nullable=False),
    Column("redriven_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

__all__ = ["metadata", "stores", "rules", "customer_state", "action_executions", "execution_logs", "api_tokens", "Numeric"]
