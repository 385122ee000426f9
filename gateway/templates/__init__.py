"""Templates: the one sandboxed Jinja environment and its limits (`environment`, `sandbox`),
what one template evaluation may spend (`budget`), templates compiled once (`templating`),
and the lookups with everyday filters it evaluates in plain Python, through the sandbox's
guarded filters (`lookups`)."""
