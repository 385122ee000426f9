"""The console: a server-rendered web view of the workflows, the run log and the jobs, at
`{prefix}/console`, for whoever holds an admin API key (see `pages` for its routes,
`session` for its cookies, `chart` for its SVG, and what each page reads in a module per
page: `overview_page`, `workflows_page`, `runs_page`, `jobs_page`, sharing `paging`)."""

from gateway.console.pages import Console

__all__ = ["Console"]
