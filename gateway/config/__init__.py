"""Config files as the gateway reads them: strict YAML with positions (`source`), the JSON
Schema's checks (`schema`, with its compiled validator in `schema_validator`), and
diagnostics as text or JSON (`diagnostics`)."""
