"""Workflows over time: the scheduler role (`wooflow scheduler`); see ARCHITECTURE.md."""
