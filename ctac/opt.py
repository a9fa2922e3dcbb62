"""`ctac-opt FILE.mlir -p pass1,pass2{opt=v}`: xdsl-opt with ctac's dialects and passes."""

from __future__ import annotations

import sys

from xdsl.dialects.builtin import ModuleOp
from xdsl.utils.exceptions import DiagnosticException, ParseError
from xdsl.xdsl_opt_main import xDSLOptMain

from ctac.errors import CtacError
from ctac.pipeline import PROJECT_DIALECTS, PROJECT_PASSES, module_text


class CtacOptMain(xDSLOptMain):
    def register_all_dialects(self) -> None:
        super().register_all_dialects()
        for dialect in PROJECT_DIALECTS:
            if dialect.name not in self.ctx.registered_dialect_names:
                self.ctx.register_dialect(dialect.name, lambda d=dialect: d)

    def output_resulting_program(self, prog: ModuleOp) -> str:
        # One printer for `ctac compile` and `ctac-opt`, so their outputs match byte for byte.
        if self.args.target == "mlir" and not (
            self.args.print_op_generic or self.args.print_no_properties or self.args.print_debuginfo
        ):
            return module_text(prog)
        return super().output_resulting_program(prog)

    def register_all_passes(self) -> None:
        super().register_all_passes()
        for name, factory in PROJECT_PASSES.items():
            self.register_pass(name, factory)


def main(argv: list[str] | None = None) -> int:
    try:
        CtacOptMain(description="ctac's modular optimizer driver", args=argv).run()
    except ParseError as exc:
        location = exc.span.get_location()
        print(f"error: {location.file}:{location.line}:{location.col}: {exc.msg}", file=sys.stderr)
        return 2
    except (CtacError, DiagnosticException) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the input file (xdsl-opt opens it itself)
        print(f"error: cannot read '{exc.filename}': {exc.strerror}", file=sys.stderr)
        return 2
    except ValueError as exc:
        if str(exc).startswith("Unrecognized passes"):
            known = ", ".join(sorted(PROJECT_PASSES))
            print(f"error: {exc}; ctac's passes: {known} (and xDSL's own)", file=sys.stderr)
            return 2
        if _raised_in(exc, _PASS_ARGUMENTS):
            print(
                f"error: -p: bad pass options: {exc} (options are name=value pairs the "
                "pass declares, e.g. cta-compress{tau-q=0.5 hash-bits=4}; docs/compression.md "
                "lists cta-compress's)",
                file=sys.stderr,
            )
            return 2
        raise
    return 0


# xDSL's parser of pass options (`pass{name=value}`): a ValueError raised there is the user's
# spec, not a bug (xDSL raises plain ValueErrors for unknown and mistyped options).
_PASS_ARGUMENTS = ("xdsl", "utils", "arg_spec.py")


def _raised_in(exc: BaseException, path_tail: tuple[str, ...]) -> bool:
    """Whether the exception was raised in a file whose path ends with `path_tail`."""
    trace = exc.__traceback__
    while trace is not None and trace.tb_next is not None:
        trace = trace.tb_next
    if trace is None:
        return False
    parts = trace.tb_frame.f_code.co_filename.replace("\\", "/").split("/")
    return tuple(parts[-len(path_tail) :]) == path_tail


if __name__ == "__main__":
    sys.exit(main())
