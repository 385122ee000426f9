"""The HTTP API: the workflows' endpoints (`workflow_endpoints`), who a caller is (`auth`),
parameters detected from a sample (`detection`), the OpenAPI document (`openapi`,
`data_openapi`), and Bubble's Data API (`data_api` routes over `data_operations`)."""
