"""Runtime: numpy semantics of the IR (reference evaluator) and, later, the ISA interpreter."""
