"""workflows: versions that pin in-flight runs, branches, goals, A/B variants.

- rules.goals, rules.when_disabled: what ends a run as a conversion; what disabling the
  workflow does to its runs in flight (`exit` them, or let them `finish`);
- rule_versions: every version of every rule, written by a trigger on `rules` (whoever
  writes the rule: the API, templates, imports, SQL). An update that changes what a run
  does (trigger, options, conditions, steps, frequency, exits, goals) without raising
  `version` gets version + 1 from a BEFORE trigger, so a version's content never changes;
- scheduled_steps.rule_version (the run's pinned version), .variant (the A/B variant sent),
  .decision (a branch's yes/no), .exit_kind (ordered, goal, condition...); status `done`
  for a resolved control row (a run's start, a branch);
- variant_tests: the auto-winner of an A/B step: when every variant had its sends, when
  the winner is picked, and which;
- an index of engagements (opens and clicks, 0016_analytics) by rule, for A/B winners.

Revision ID: 0017_workflows
Revises: 0016_analytics
Create Date: 2026-12-06
"""
from alembic import op

revision = "0017_workflows"
down_revision = "0016_analytics"
branch_labels = None
depends_on = None

# The columns that make up what a version does (a change of any of them is a new version).
_CONTENT = ("trigger", "trigger_options", "conditions", "actions", "frequency", "exit_conditions", "goals")


def upgrade() -> None:
    changed = " OR ".join(f"NEW.{c} IS DISTINCT FROM OLD.{c}" for c in _CONTENT)
    op.execute(f"""
    ALTER TABLE rules ADD COLUMN goals jsonb NOT NULL DEFAULT '[]'::jsonb;
    ALTER TABLE rules ADD COLUMN when_disabled text NOT NULL DEFAULT 'exit';

    CREATE TABLE rule_versions (
        rule_id bigint NOT NULL REFERENCES rules(id) ON DELETE CASCADE,
        version integer NOT NULL,
        store_id varchar(64) NOT NULL,
        spec jsonb NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (rule_id, version)
    );

    CREATE FUNCTION wooflow_rule_version_bump() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF NEW.version = OLD.version AND ({changed}) THEN
            NEW.version := OLD.version + 1;
        END IF;
        RETURN NEW;
    END $$;
    CREATE TRIGGER rules_version_bump BEFORE UPDATE ON rules
        FOR EACH ROW EXECUTE FUNCTION wooflow_rule_version_bump();

    CREATE FUNCTION wooflow_rule_version_record() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO rule_versions (rule_id, version, store_id, spec)
        VALUES (NEW.id, NEW.version, NEW.store_id, jsonb_build_object(
            'name', NEW.name, 'trigger', NEW.trigger, 'trigger_options', NEW.trigger_options,
            'conditions', NEW.conditions, 'actions', NEW.actions, 'priority', NEW.priority,
            'enabled', NEW.enabled, 'group_label', NEW.group_label, 'frequency', NEW.frequency,
            'exit_conditions', NEW.exit_conditions, 'goals', NEW.goals, 'when_disabled', NEW.when_disabled))
        ON CONFLICT (rule_id, version) DO NOTHING;
        RETURN NULL;
    END $$;
    CREATE TRIGGER rules_version_record AFTER INSERT OR UPDATE ON rules
        FOR EACH ROW EXECUTE FUNCTION wooflow_rule_version_record();

    -- every rule's current version is a version (runs stored before keep working)
    INSERT INTO rule_versions (rule_id, version, store_id, spec)
    SELECT id, version, store_id, jsonb_build_object(
        'name', name, 'trigger', trigger, 'trigger_options', trigger_options, 'conditions', conditions,
        'actions', actions, 'priority', priority, 'enabled', enabled, 'group_label', group_label,
        'frequency', frequency, 'exit_conditions', exit_conditions, 'goals', goals,
        'when_disabled', when_disabled)
    FROM rules;

    ALTER TABLE scheduled_steps ADD COLUMN rule_version integer;
    ALTER TABLE scheduled_steps ADD COLUMN variant text;
    ALTER TABLE scheduled_steps ADD COLUMN decision text;
    ALTER TABLE scheduled_steps ADD COLUMN exit_kind text;
    -- sends per A/B variant while a test runs
    CREATE INDEX ix_scheduled_steps_variant ON scheduled_steps (rule_id, rule_version, step, variant)
        WHERE variant IS NOT NULL AND status = 'emitted';

    CREATE TABLE variant_tests (
        rule_id bigint NOT NULL REFERENCES rules(id) ON DELETE CASCADE,
        version integer NOT NULL,
        step integer NOT NULL,
        store_id varchar(64) NOT NULL,
        metric text NOT NULL,
        ready_at timestamptz NOT NULL,     -- every variant had its sends; the winner is picked from then
        winner text,
        decided_at timestamptz,
        stats jsonb NOT NULL DEFAULT '{{}}'::jsonb,
        PRIMARY KEY (rule_id, version, step)
    );

    CREATE INDEX ix_engagements_rule ON engagements (store_id, rule_id, at);
    """)


def downgrade() -> None:
    op.execute("""
    DROP INDEX ix_engagements_rule;
    DROP TABLE variant_tests;
    DROP INDEX IF EXISTS ix_scheduled_steps_variant;
    ALTER TABLE scheduled_steps DROP COLUMN exit_kind, DROP COLUMN decision, DROP COLUMN variant,
        DROP COLUMN rule_version;
    DROP TRIGGER IF EXISTS rules_version_record ON rules;
    DROP FUNCTION IF EXISTS wooflow_rule_version_record();
    DROP TRIGGER IF EXISTS rules_version_bump ON rules;
    DROP FUNCTION IF EXISTS wooflow_rule_version_bump();
    DROP TABLE rule_versions;
    ALTER TABLE rules DROP COLUMN when_disabled, DROP COLUMN goals;
    """)
