"""SMTP pools: CRUD, encrypted credentials, connection test, health and usage."""
