"""Scenario files: the format, loading and validation, replays, and running them on a lab."""
