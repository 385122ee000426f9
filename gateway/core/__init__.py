"""The core every other part of the gateway stands on, and which imports none of them:
errors and their codes (`errors`), JSON pointers (`pointer`), JSON and the one date form
(`encoding`), the clock (`clock`), record ids (`ids`), settings (`settings`), secrets kept out
of what the logs keep (`redaction`), and the server log's lines (`logformat`)."""
