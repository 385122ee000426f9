"""The SQLite backend: the embedded default, one file in WAL mode (`storage.SqliteStorage`),
a module per role over one `connector`, its group-committing `writer`, and its `sql/`."""
