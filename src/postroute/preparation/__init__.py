"""Message preparation, pure (imports only kit/): what is relayed for one recipient
(:func:`.prepare.prepare`), the header lines it adds (:mod:`.headers`), DKIM
signatures (:mod:`.dkim`)."""

from postroute.preparation.prepare import POOL_HEADER, Outgoing, Prepared, Signing, prepare

__all__ = ["POOL_HEADER", "Outgoing", "Prepared", "Signing", "prepare"]
