"""The commands of `ctac`, one module per family; ctac/cli.py holds the parser and `main`.

- compile.py: compile, inspect, eval
- run.py: run, profile, compare
- calibrate.py: calibrate
- demo.py: demo
- sweep.py: sweep
- program.py: isa, disasm, asm
- common.py: text in and out

They parse arguments, call the layers below and print: the Python API (ctac/api.py: provenance
records, run settings), the front end and compression specs (ctac/frontend.py) the API shares,
and the flags' definitions (ctac/arguments.py), so nothing below imports a command.
"""
