"""`python cli.py …` from a checkout: the same command line as `minidiff …` and `python -m minidiff …`."""
from minidiff.cli import main

if __name__ == "__main__":
    main()
