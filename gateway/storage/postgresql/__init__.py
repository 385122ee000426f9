"""The PostgreSQL backend: JSONB records through a psycopg 3 pool (`storage.PostgresStorage`),
a module per role over one `connector`, and its `sql/`."""
