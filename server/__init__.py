"""Steerboard server: ingest workers, JSON API and live pages. Never imports torch."""
