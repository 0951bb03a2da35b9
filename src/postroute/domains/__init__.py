"""Sending domains: add one, publish its DNS records, verify them; DKIM keys and their
rotation; the rules the submit path and delivery apply to a message's From domain."""
