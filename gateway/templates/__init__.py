"""Templates: the one sandboxed Jinja environment and its limits (`environment`, `sandbox`),
what one template evaluation may spend (`budget`), templates compiled once (`templating`),
and lookups and everyday filters evaluated without Jinja (`shortcut`)."""
