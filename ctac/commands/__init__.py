"""The commands of `ctac`, one module per family; ctac/cli.py holds the parser and `main`.

- compile.py: compile, inspect, eval
- run.py: run, profile, compare
- calibrate.py: calibrate
- demo.py: demo
- sweep.py: sweep
- program.py: isa, disasm, asm
- common.py: the front end and compression specs the commands share
- arguments.py: the flags several commands take
"""
