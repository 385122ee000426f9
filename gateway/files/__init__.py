"""Files and images: the bytes of `file` and `image` values, kept in a file store (a local
folder, or an S3-compatible bucket), described by a small sidecar (`StoredFile`), served at
`/files/<id>/<name>` while a record holds them, and through signed, expiring URLs when
private. See `keeping` for what a caller's upload goes through before it is kept."""
