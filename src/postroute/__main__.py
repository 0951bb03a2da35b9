"""``python -m postroute`` is the ``postroute`` command."""

from postroute.cli import main

main()
