"""Run the tagger CLI from a source checkout: ``python cli.py --help``."""

from tagger.cli import main

if __name__ == "__main__":
    main()
