"""The running server: the application and its lifespan (`app`), its connections
(`protocol`), hot reload (`reload`), Prometheus metrics (`metrics`), and workflow tests run
in-process through the real application (`workflow_tests`)."""
