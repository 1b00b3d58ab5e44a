"""Alembic migrations (`wooflow migrate`), one file per schema version under `versions/`.

Each migration repeats the same header (revision ids, imports) and spells its tables out in
full: a migration is frozen once released and must not import shared helpers whose later
changes would rewrite history, so the repetition between them is on purpose.
"""
