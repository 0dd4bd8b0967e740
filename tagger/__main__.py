"""``python -m tagger``: the same app as the ``tagger`` command."""

from tagger.cli import main

main()
