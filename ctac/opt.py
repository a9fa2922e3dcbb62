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
        if not str(exc).startswith("Unrecognized passes"):
            raise
        known = ", ".join(sorted(PROJECT_PASSES))
        print(f"error: {exc}; ctac's passes: {known} (and xDSL's own)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
