"""Message preparation, pure (imports only kit/): what is relayed for one recipient
(:func:`.prepare.prepare`), the header lines it adds (:mod:`.headers`), List-Unsubscribe
(:mod:`.unsubscribe`), open and click tracking of HTML parts (:mod:`.tracking`, with
:mod:`.links`, :mod:`.mime`, :mod:`.transfer` and the tokens of :mod:`.tokens`), DKIM
signatures (:mod:`.dkim`), and what is kept per content (:mod:`.cache`)."""

from postroute.preparation.cache import Cache
from postroute.preparation.prepare import POOL_HEADER, Outgoing, Prepared, Signing, prepare
from postroute.preparation.tokens import Tokens
from postroute.preparation.tracking import Links

__all__ = ["POOL_HEADER", "Cache", "Links", "Outgoing", "Prepared", "Signing", "Tokens", "prepare"]
