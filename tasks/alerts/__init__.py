"""Alerts: webhook notifications and the redaction of secrets from anything they carry."""
