"""What a run is and how one runs: the compiled model, a run's context, its identity and
accounts, privacy rules, parameter types, the outbound services, and the interpreter that
runs a compiled workflow on plain data (no HTTP)."""
