"""The SMTP client to upstream relays, used by delivery and by the connection test:
settings (:mod:`.config`), sessions that open with TLS and AUTH and classify failures
(:mod:`.session`), one message over a session (:mod:`.transport`, pipelined by
:mod:`.pipelining` when the relay offers it), and what an attempt came to
(:mod:`.results`, error codes in :mod:`.errors`)."""
