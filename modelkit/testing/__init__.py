"""Test helpers that ship with modelkit (a local Hub-compatible server)."""
