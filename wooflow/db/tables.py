"""PostgreSQL tables (SQLAlchemy Core). Schema changes go through Alembic migrations
in `migrations/versions/`; this file mirrors the latest migration for queries.

Tables repeat column shapes (`store_id`, keys, timestamps) on purpose: each declaration is
spelled out in full so it reads like its migration and like psql's description of it."""

from __future__ import annotations

from sqlalchemy import (
                        BigInteger,
                        Boolean,
                        Column,
                        DateTime,
                        Double,
                        ForeignKey,
                        Index,
                        Integer,
                        LargeBinary,
                        MetaData,
                        Numeric,
                        SmallInteger,
                        String,
                        Table,
                        Text,
                        func,
                        text,
)
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
    # signs the links in messages (unsubscribe); never changed by a secret rotation (0011_link_key)
    Column("link_key", Text, nullable=False,
           server_default=text("replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', '')")),
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
    Column("engine", JSONB, nullable=False, server_default=text("'{}'::jsonb")),  # 0003: rule-engine bookkeeping
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
    Index("ix_execution_logs_rule", "store_id", "rule_id", "executed_at"),
    # 0014: the console's log explorer — keyset pages, customer and status filters
    Index("ix_execution_logs_store_time_id", "store_id", "executed_at", "log_id"),
    Index("ix_execution_logs_customer", "store_id", "customer_key", "executed_at"),
    Index("ix_execution_logs_status", "store_id", "status", "executed_at"),
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
    Column("claimed_by", Text, nullable=True),  # the scheduler that emitted/exited it
    Column("emitted_at", DateTime(timezone=True), nullable=True),
    Column("exit_reason", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_scheduled_steps_due", "due_at", postgresql_where=text("status = 'pending'")),
    Index("ix_scheduled_steps_run", "store_id", "rule_id", "event_id"),
)

from sqlalchemy import Date  # noqa: E402  (kept in this block: the import line above is shared)

carts = Table(
    "carts", metadata,
    Column("store_id", String(64), primary_key=True),
    Column("session_id", Text, primary_key=True),
    Column("customer_key", Text, nullable=True),
    Column("customer_id", BigInteger, nullable=True),
    Column("email", Text, nullable=True),
    Column("first_name", Text, nullable=False, server_default=""),
    Column("items", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    Column("total", Numeric(20, 4), nullable=True),
    Column("currency", Text, nullable=False, server_default=""),
    # active | abandoned | recovered | ordered | emptied
    Column("status", Text, nullable=False, server_default="active"),
    Column("last_activity_at", DateTime(timezone=True), nullable=False),
    Column("items_at", DateTime(timezone=True), nullable=True),  # events of one session arrive out of order
    Column("abandoned_at", DateTime(timezone=True), nullable=True),
    Column("abandon_event_id", Text, nullable=True),
    Column("token", Text, nullable=False, unique=True),
    Column("clicked_at", DateTime(timezone=True), nullable=True),
    Column("recovered_at", DateTime(timezone=True), nullable=True),
    Column("recovered_order_id", BigInteger, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

customer_calendar = Table(
    "customer_calendar", metadata,
    Column("store_id", String(64), primary_key=True),
    Column("customer_key", Text, primary_key=True),
    Column("customer_id", BigInteger, nullable=True),
    Column("email", Text, nullable=False, server_default=""),
    Column("first_name", Text, nullable=False, server_default=""),
    Column("last_name", Text, nullable=False, server_default=""),
    Column("first_order_at", DateTime(timezone=True), nullable=True),
    Column("last_order_at", DateTime(timezone=True), nullable=True),
    Column("last_order_id", BigInteger, nullable=True),
    Column("birth_month", Integer, nullable=True),
    Column("birth_day", Integer, nullable=True),
    Column("renewal_at", DateTime(timezone=True), nullable=True),
    Column("card_expiry", Date, nullable=True),  # last day of the card's expiry month
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

storefront_activity = Table(
    "storefront_activity", metadata,
    Column("event_id", Text, primary_key=True),
    Column("store_id", String(64), nullable=False),
    Column("customer_key", Text, nullable=False),
    Column("session_id", Text, nullable=False, server_default=""),
    Column("kind", Text, nullable=False),  # product_viewed | category_viewed | search
    Column("subject", Text, nullable=False, server_default=""),
    Column("category", Text, nullable=False, server_default=""),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
)

trigger_firings = Table(
    "trigger_firings", metadata,
    Column("rule_id", BigInteger, primary_key=True),
    Column("customer_key", Text, primary_key=True),
    Column("period", Text, primary_key=True),
    Column("store_id", String(64), nullable=False),
    Column("trigger", Text, nullable=False),
    Column("subject", Text, nullable=False, server_default=""),
    Column("event_id", Text, nullable=False),
    Column("fired_at", DateTime(timezone=True), nullable=False),
)

attributions = Table(
    "attributions", metadata,
    Column("store_id", String(64), primary_key=True),
    Column("rule_id", BigInteger, primary_key=True),
    Column("order_id", BigInteger, primary_key=True),
    Column("customer_key", Text, nullable=False),
    Column("event_id", Text, nullable=False),
    Column("revenue", Numeric(20, 4), nullable=False),
    Column("currency", Text, nullable=False, server_default=""),
    Column("kind", Text, nullable=False, server_default="conversion"),  # conversion | cart_recovery
    Column("cart_session", Text, nullable=True),
    Column("ordered_at", DateTime(timezone=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
# --- end scheduler -------------------------------------------------------------------

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

# --- bridge (producers/; migration 0002) ------------------------------------------------
bridge_seen = Table(
    "bridge_seen", metadata,
    Column("event_id", Text, primary_key=True),
    Column("store_id", String(64), nullable=False),
    Column("state", Text, nullable=False, server_default="pending"),  # pending | done
    Column("claimed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_bridge_seen_claimed", "claimed_at"),
)

bridge_outbox = Table(
    "bridge_outbox", metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=True),
    Column("event_id", Text, nullable=False),
    Column("store_id", String(64), nullable=False),
    Column("topic", Text, nullable=False),
    Column("key", Text, nullable=False),
    Column("value", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

bridge_gone_deliveries = Table(
    "bridge_gone_deliveries", metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("store_id", String(64), nullable=False),
    Column("topic", Text, nullable=False),
    Column("webhook_id", Text, nullable=False, server_default=""),
    Column("code", Text, nullable=False, server_default=""),
    Column("body", Text, nullable=False, server_default=""),
    Column("received_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_bridge_gone_store", "store_id", "received_at"),
)

bridge_backfill_checkpoints = Table(
    "bridge_backfill_checkpoints", metadata,
    # one run = (store, --since as asked, resources); `since` is the instant it reads from (0007_backfill)
    Column("store_id", String(64), ForeignKey("stores.id", ondelete="CASCADE"), primary_key=True),
    Column("since_spec", Text, primary_key=True),
    Column("resources", Text, primary_key=True),
    Column("resource", Text, primary_key=True),
    Column("since", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("next_page", Integer, nullable=False, server_default="1"),
    Column("total_pages", Integer, nullable=True),
    Column("total_items", Integer, nullable=True),
    Column("produced", BigInteger, nullable=False, server_default="0"),
    Column("duplicates", BigInteger, nullable=False, server_default="0"),
    Column("done", Boolean, nullable=False, server_default=text("false")),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

bridge_poller_state = Table(
    "bridge_poller_state", metadata,
    Column("store_id", String(64), ForeignKey("stores.id", ondelete="CASCADE"), primary_key=True),
    Column("resource", Text, primary_key=True),
    Column("watermark", DateTime(timezone=True), nullable=False),
    Column("polled_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

storefront_sessions = Table(
    "storefront_sessions", metadata,
    Column("store_id", String(64), primary_key=True),
    Column("session_id", Text, primary_key=True),
    Column("customer_key", Text, nullable=False),
    Column("customer_id", BigInteger, nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

store_webhooks = Table(
    "store_webhooks", metadata,
    Column("store_id", String(64), ForeignKey("stores.id", ondelete="CASCADE"), primary_key=True),
    Column("webhook_id", BigInteger, primary_key=True),
    Column("topic", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
# --- end bridge ---------------------------------------------------------------------------

# --- rule engine (0003_rules.py) ---------------------------------------------------
order_state = Table(
    "order_state", metadata,
    Column("store_id", String(64), primary_key=True),
    Column("order_id", BigInteger, primary_key=True),
    Column("customer_key", Text, nullable=False),
    Column("status", Text, nullable=False, server_default=""),
    Column("modified_ms", BigInteger, nullable=False, server_default="0"),
    Column("first_event_id", Text, nullable=False),
    Column("transitions", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    Column("total", Numeric(20, 4), nullable=False, server_default="0"),
    Column("currency", Text, nullable=False, server_default=""),
    Column("created_ms", BigInteger, nullable=False, server_default="0"),
    Column("counted", Boolean, nullable=False, server_default=text("false")),
    Column("count_event_id", Text, nullable=True),
    Column("before", JSONB, nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_order_state_customer", "store_id", "customer_key"),
    # 0015: paid and refund marks (consumer/apply.py)
    Column("marks", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
)

rule_firings = Table(
    "rule_firings", metadata,
    Column("rule_id", BigInteger, ForeignKey("rules.id", ondelete="CASCADE"), primary_key=True),
    Column("customer_key", Text, primary_key=True),
    Column("store_id", String(64), nullable=False),
    Column("first_event_id", Text, nullable=False),
    Column("last_event_id", Text, nullable=False),
    Column("last_fired_at", DateTime(timezone=True), nullable=False),
    Column("fired", Integer, nullable=False, server_default="1"),
)

rule_audit = Table(
    "rule_audit", metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("store_id", String(64), nullable=False),
    Column("rule_id", BigInteger, nullable=True),
    Column("action", Text, nullable=False),
    Column("dry_run", Boolean, nullable=False, server_default=text("false")),
    Column("actor", Text, nullable=False, server_default=""),
    Column("details", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_rule_audit_store", "store_id", "rule_id", "created_at"),
)
# --- end rule engine -------------------------------------------------------------------

# --- workers (0004_workers.py) -------------------------------------------------------
# action_executions gains `message` in 0004 (mirrored above as a late column).
action_executions.append_column(Column("message", Text, nullable=False, server_default=""))
# 0009_leases: the worker instance holding (or last holding) a claim, and how many of the
# key's attempts were interrupted (their worker stopped mid-action).
action_executions.append_column(Column("owner", Text, nullable=True))
action_executions.append_column(Column("interrupted", Integer, nullable=False, server_default="0"))

consents = Table(
    "consents", metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("store_id", String(64), nullable=False),
    Column("customer_key", Text, nullable=True),
    Column("email", Text, nullable=True),
    Column("channel", Text, nullable=False, server_default="email"),
    Column("granted", Boolean, nullable=False),
    Column("source", Text, nullable=False, server_default=""),
    Column("details", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("recorded_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("source_ref", Text, nullable=True),  # the event an answer was read from (unique per source)
    Index("ux_consents_source_ref", "store_id", "channel", "source", "source_ref", unique=True,
          postgresql_where=text("source_ref IS NOT NULL")),
)

tasks = Table(
    "tasks", metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("store_id", String(64), nullable=False),
    Column("idempotency_key", Text, nullable=False, unique=True),
    Column("rule_id", BigInteger, nullable=True),
    Column("customer_key", Text, nullable=True),
    Column("subject_type", Text, nullable=False, server_default=""),
    Column("subject_id", Text, nullable=False, server_default=""),
    Column("title", Text, nullable=False),
    Column("description", Text, nullable=False, server_default=""),
    Column("assignee", Text, nullable=False, server_default=""),
    Column("priority", Text, nullable=False, server_default="normal"),
    Column("status", Text, nullable=False, server_default="open"),
    Column("due_at", DateTime(timezone=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("completed_at", DateTime(timezone=True), nullable=True),
    Column("completed_by", Text, nullable=True),
)

deferred_commands = Table(
    "deferred_commands", metadata,
    Column("topic", Text, primary_key=True),
    Column("idempotency_key", Text, primary_key=True),
    Column("attempt", Integer, primary_key=True),
    Column("store_id", String(64), nullable=False),
    Column("due_at", DateTime(timezone=True), nullable=False),
    Column("reason", Text, nullable=False),
    Column("kafka_key", LargeBinary, nullable=True),
    Column("payload", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
# --- end workers -----------------------------------------------------------------------

# --- identity (0008_identity.py) -------------------------------------------------------
customer_identities = Table(
    "customer_identities", metadata,
    Column("store_id", String(64), primary_key=True),
    Column("email_hash", Text, primary_key=True),
    Column("customer_id", BigInteger, nullable=False),
    Column("source", Text, nullable=False, server_default="order"),  # account | order
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

order_owners = Table(
    "order_owners", metadata,
    Column("store_id", String(64), primary_key=True),
    Column("order_id", BigInteger, primary_key=True),
    Column("customer_key", Text, nullable=False),
)

# a guest row folded into a registered customer's (consumer/merge.py)
customer_state.append_column(Column("merged_into", Text, nullable=True))
Index("ix_customer_state_merged", customer_state.c.store_id, customer_state.c.merged_into,
      postgresql_where=text("merged_into IS NOT NULL"))
Index("ix_rule_firings_customer", rule_firings.c.customer_key)
Index("ix_storefront_activity_customer", storefront_activity.c.store_id, storefront_activity.c.customer_key)
Index("ix_attributions_customer", attributions.c.store_id, attributions.c.customer_key)
Index("ix_trigger_firings_customer", trigger_firings.c.customer_key)
# --- end identity ------------------------------------------------------------------------

# --- state levels (0012_state_levels.py) ----------------------------------------------------
# how much state the rule consumer keeps for a store (consumer/needs.py: Keep) and since when
state_levels = Table(
    "state_levels", metadata,
    Column("store_id", String(64), ForeignKey("stores.id", ondelete="CASCADE"), primary_key=True),
    Column("keeps", SmallInteger, nullable=False),
    Column("since", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# --- product catalog (0013_catalog.py): written by the rule consumer only (consumer/catalog.py)
# 0015: the account's role and the purchase history of the customer (consumer/history.py)
customer_state.append_column(Column("role", Text, nullable=True))
customer_state.append_column(Column("history", JSONB, nullable=True))

subscription_state = Table(
    "subscription_state", metadata,
    Column("store_id", String(64), primary_key=True),
    Column("subscription_id", BigInteger, primary_key=True),
    Column("customer_key", Text, nullable=False),
    Column("email", Text, nullable=False, server_default=""),
    Column("first_event_id", Text, nullable=False),
    Column("status", Text, nullable=False, server_default=""),
    Column("modified_ms", BigInteger, nullable=False, server_default="0"),
    Column("transitions", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    Column("product_ids", ARRAY(BigInteger), nullable=False, server_default=text("'{}'::bigint[]")),
    Column("billing_period", Text, nullable=False, server_default=""),
    Column("billing_interval", Integer, nullable=False, server_default="1"),
    Column("total", Numeric(20, 4), nullable=False, server_default="0"),
    Column("currency", Text, nullable=False, server_default=""),
    Column("next_payment_at", DateTime(timezone=True), nullable=True),
    Column("trial_end_at", DateTime(timezone=True), nullable=True),
    Column("end_at", DateTime(timezone=True), nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_subscription_state_customer", "store_id", "customer_key"),
)

product_catalog = Table(
    "product_catalog", metadata,
    Column("store_id", String(64), primary_key=True),
    Column("product_id", BigInteger, primary_key=True),
    Column("parent_id", BigInteger, nullable=False, server_default="0"),
    Column("type", Text, nullable=False, server_default=""),
    Column("status", Text, nullable=False, server_default=""),
    Column("category_ids", ARRAY(BigInteger), nullable=False, server_default=text("'{}'::bigint[]")),
    Column("tag_ids", ARRAY(BigInteger), nullable=False, server_default=text("'{}'::bigint[]")),
    Column("modified_ms", BigInteger, nullable=False, server_default="0"),
    Column("source", Text, nullable=False, server_default="event"),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)


# --- workflows (0017_workflows.py) ------------------------------------------------------------
# what ends a run as a conversion, and what disabling the workflow does to its runs in flight
rules.append_column(Column("goals", JSONB, nullable=False, server_default=text("'[]'::jsonb")))
rules.append_column(Column("when_disabled", Text, nullable=False, server_default="exit"))  # exit | finish

# every version of every rule, written by a trigger on `rules` (a content change without a
# version bump gets one); a run reads its steps, branches, exits and goals from its version
rule_versions = Table(
    "rule_versions", metadata,
    Column("rule_id", BigInteger, ForeignKey("rules.id", ondelete="CASCADE"), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("store_id", String(64), nullable=False),
    Column("spec", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# the run's pinned version, the A/B variant sent, a branch's decision, why a run ended;
# status `done`: a resolved control row (a run's start, a branch)
scheduled_steps.append_column(Column("rule_version", Integer, nullable=True))
scheduled_steps.append_column(Column("variant", Text, nullable=True))
scheduled_steps.append_column(Column("decision", Text, nullable=True))
scheduled_steps.append_column(Column("exit_kind", Text, nullable=True))
Index("ix_scheduled_steps_variant", scheduled_steps.c.rule_id, scheduled_steps.c.rule_version,
      scheduled_steps.c.step, scheduled_steps.c.variant,
      postgresql_where=text("variant IS NOT NULL AND status = 'emitted'"))

# an A/B step's auto-winner: ready once every variant had its sends, decided at ready_at
variant_tests = Table(
    "variant_tests", metadata,
    Column("rule_id", BigInteger, ForeignKey("rules.id", ondelete="CASCADE"), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("step", Integer, primary_key=True),
    Column("store_id", String(64), nullable=False),
    Column("metric", Text, nullable=False),
    Column("ready_at", DateTime(timezone=True), nullable=False),
    Column("winner", Text, nullable=True),
    Column("decided_at", DateTime(timezone=True), nullable=True),
    Column("stats", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
)

# --- end workflows -----------------------------------------------------------------------------


# --- analytics (0016_analytics.py) ------------------------------------------------------
# the share of a rule's audience held out as a control group (wooflow/holdout.py)
rules.append_column(Column("holdout_percent", Double, nullable=False, server_default="0"))

messages = Table(
    "messages", metadata,
    Column("message_id", Text, primary_key=True),  # the command's idempotency key
    Column("store_id", String(64), nullable=False),
    Column("rule_id", BigInteger, nullable=False),
    Column("step", Integer, nullable=False),
    Column("customer_key", Text, nullable=False),
    Column("event_id", Text, nullable=False),
    Column("channel", Text, nullable=False, server_default="email"),
    Column("links", JSONB, nullable=False, server_default=text("'[]'::jsonb")),  # tracked URLs, by index
    Column("sent_at", DateTime(timezone=True), nullable=False),
    Index("ix_messages_customer", "store_id", "customer_key", "sent_at"),
    Index("ix_messages_rule", "store_id", "rule_id", "sent_at"),
)

# opens and clicks as the open/click tracker records them (message id = the command's
# idempotency key); branches on engagement and A/B winners read it
engagements = Table(
    "engagements", metadata,
    Column("message_id", Text, primary_key=True),
    Column("kind", Text, primary_key=True),  # open | click
    Column("link", Integer, primary_key=True),  # the link's index in the message; -1: the open pixel
    Column("machine", Boolean, primary_key=True),  # a scanner or mail proxy, not a person
    Column("store_id", String(64), nullable=False),
    Column("rule_id", BigInteger, nullable=False),
    Column("step", Integer, nullable=False),
    Column("customer_key", Text, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),  # the first hit
    Column("user_agent", Text, nullable=False, server_default=""),
    Index("ix_engagements_customer", "store_id", "customer_key", "at"),
    Index("ix_engagements_rule", "store_id", "rule_id", "at"),
)

engagement_firsts = Table(
    "engagement_firsts", metadata,
    Column("message_id", Text, primary_key=True),
    Column("kind", Text, primary_key=True),  # open (any open or click) | click
    Column("audience", Text, primary_key=True),  # person (machines left out) | any
    Column("store_id", String(64), nullable=False),
    Column("rule_id", BigInteger, nullable=False),
    Column("step", Integer, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
)

engagement_daily = Table(
    "engagement_daily", metadata,
    Column("store_id", String(64), primary_key=True),
    Column("rule_id", BigInteger, primary_key=True),
    Column("day", Date, primary_key=True),  # UTC day of the first open / click
    Column("step", Integer, primary_key=True),
    Column("audience", Text, primary_key=True),
    Column("opened", BigInteger, nullable=False, server_default="0"),
    Column("clicked", BigInteger, nullable=False, server_default="0"),
    Index("ix_engagement_daily_day", "store_id", "day"),
)

message_conversions = Table(
    "message_conversions", metadata,
    Column("store_id", String(64), primary_key=True),
    Column("order_id", BigInteger, primary_key=True),  # one message credited per order
    Column("message_id", Text, nullable=False),
    Column("rule_id", BigInteger, nullable=False),
    Column("step", Integer, nullable=False),
    Column("customer_key", Text, nullable=False),
    Column("touch", Text, nullable=False),  # click | open | send
    Column("touched_at", DateTime(timezone=True), nullable=False),
    Column("ordered_at", DateTime(timezone=True), nullable=False),
    Column("currency", Text, nullable=False, server_default=""),
    Column("revenue", Numeric(20, 4), nullable=False),
    Column("refunded", Numeric(20, 4), nullable=False, server_default="0"),
    Column("voided", Boolean, nullable=False, server_default=text("false")),  # cancelled, failed, refunded
    Column("order_modified", DateTime(timezone=True), nullable=False),  # the newest order state applied
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_message_conversions_rule", "store_id", "rule_id", "ordered_at"),
    Index("ix_message_conversions_time", "store_id", "ordered_at"),
)

conversion_daily = Table(  # kept by statement-level triggers on message_conversions (0016_analytics)
    "conversion_daily", metadata,
    Column("store_id", String(64), primary_key=True),
    Column("rule_id", BigInteger, primary_key=True),
    Column("day", Date, primary_key=True),  # UTC day of the order
    Column("step", Integer, primary_key=True),
    Column("currency", Text, primary_key=True),
    Column("conversions", BigInteger, nullable=False, server_default="0"),  # not voided
    Column("revenue", Numeric, nullable=False, server_default="0"),  # net of refunds, voided ones 0
    Column("refunded", Numeric, nullable=False, server_default="0"),
    Index("ix_conversion_daily_day", "store_id", "day"),
)

holdout_exposures = Table(
    "holdout_exposures", metadata,
    Column("rule_id", BigInteger, primary_key=True),
    Column("customer_key", Text, primary_key=True),  # the first time the rule reached (or held out) them
    Column("store_id", String(64), nullable=False),
    Column("held_out", Boolean, nullable=False),
    Column("event_id", Text, nullable=False),
    Column("exposed_at", DateTime(timezone=True), nullable=False),
    # their orders in the window after (not cancelled; revenue net, in the store's currency)
    Column("orders", Integer, nullable=False, server_default="0"),
    Column("revenue", Numeric(20, 4), nullable=False, server_default="0"),
    Column("recorded_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_holdout_exposures_customer", "store_id", "customer_key"),
    Index("ix_holdout_exposures_rule", "store_id", "rule_id", "exposed_at"),
    Index("ix_holdout_exposures_recorded", "recorded_at"),
)

holdout_daily = Table(  # kept by statement-level triggers on holdout_exposures (0016_analytics)
    "holdout_daily", metadata,
    Column("store_id", String(64), primary_key=True),
    Column("rule_id", BigInteger, primary_key=True),
    Column("day", Date, primary_key=True),  # UTC day of the exposures
    Column("held_out", Boolean, primary_key=True),
    Column("customers", BigInteger, nullable=False, server_default="0"),
    Column("converted", BigInteger, nullable=False, server_default="0"),
    Column("revenue", Numeric, nullable=False, server_default="0"),
    Column("revenue_sq", Numeric, nullable=False, server_default="0"),
)

customer_orders = Table(
    "customer_orders", metadata,
    Column("store_id", String(64), primary_key=True),
    Column("customer_key", Text, primary_key=True),  # the order's key, and the guest key of its billing email
    Column("order_id", BigInteger, primary_key=True),
    Column("ordered_at", DateTime(timezone=True), nullable=False),
    Column("currency", Text, nullable=False, server_default=""),
    Column("revenue", Numeric(20, 4), nullable=False),
    Column("refunded", Numeric(20, 4), nullable=False, server_default="0"),
    Column("voided", Boolean, nullable=False, server_default=text("false")),
    Column("order_modified", DateTime(timezone=True), nullable=False),
    Index("ix_customer_orders_time", "store_id", "customer_key", "ordered_at"),
    Index("ix_customer_orders_order", "store_id", "order_id"),
)

execution_daily = Table(
    "execution_daily", metadata,
    Column("store_id", String(64), primary_key=True),
    Column("rule_id", BigInteger, primary_key=True),
    Column("day", Date, primary_key=True),  # UTC
    Column("step", Integer, primary_key=True),
    Column("action_type", Text, primary_key=True),
    Column("status", Text, primary_key=True),
    Column("n", BigInteger, nullable=False),
    Index("ix_execution_daily_day", "store_id", "day"),
)
# --- end analytics -------------------------------------------------------------------------

# --- catalog names (0018_catalog_names.py): the names of a product's categories and tags,
# parallel to their ids, for the console's pickers (GET /v1/catalog/terms)
product_catalog.append_column(Column("category_names", ARRAY(Text), nullable=False,
                                     server_default=text("'{}'::text[]")))
product_catalog.append_column(Column("tag_names", ARRAY(Text), nullable=False, server_default=text("'{}'::text[]")))

__all__ = [
                        "Numeric",
                        "action_executions",
                        "api_tokens",
                        "customer_state",
                        "execution_logs",
                        "metadata",
                        "order_state",
                        "rule_audit",
                        "rule_firings",
                        "rules",
                        "stores",
]
