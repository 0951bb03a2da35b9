"""Message preparation, pure (imports only kit/): what is relayed for one recipient
(:func:`.prepare.prepare`) and the header lines it adds (:mod:`.headers`)."""

from postroute.preparation.prepare import POOL_HEADER, Outgoing, Prepared, prepare

__all__ = ["POOL_HEADER", "Outgoing", "Prepared", "prepare"]
