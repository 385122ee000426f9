"""What both backends share above their connections: the catalog of types and indexes, the
codec of stored rows, the query compiler, limits, batching, the run log's queue, bounds and
rollup, job rows, transactions and the SQL files."""
