"""Domain-free helpers: clock, ids, crypto, pagination."""
