"""`python -m minidiff …`: the same command line as `minidiff …`."""
from minidiff.cli import main

main(prog_name="minidiff")
