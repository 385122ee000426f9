"""What an API workflow with `verify`, `idempotency` or `rate_limit` does around its run
(`guard`), and each provider's signature scheme, checked over the raw body (`signature`)."""
