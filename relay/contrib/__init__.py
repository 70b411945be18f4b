"""Integrations of relay with frameworks: ``relay.contrib.django``."""
