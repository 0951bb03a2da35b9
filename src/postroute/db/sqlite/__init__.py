"""SQLite's fast write path, beneath :class:`~postroute.db.store.Store`: a whole write
transaction in one hand-off to a thread of its own (:mod:`.writer`), its statements
compiled once with multi-row inserts and updates (:mod:`.unit`)."""
