"""Delivery: queue claims, the per-pool senders, retry policy and outcome recording."""
