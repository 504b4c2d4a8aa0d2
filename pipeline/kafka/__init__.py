"""Kafka plumbing: topic declarations, admin, client configs, offsets."""
