"""The console: a server-rendered web view of the workflows, the run log and the jobs, at
`{prefix}/console`, for whoever holds an admin API key (see `pages` for its routes,
`session` for its cookies, `views` for what each page reads, `chart` for its SVG)."""

from gateway.console.pages import Console

__all__ = ["Console"]
