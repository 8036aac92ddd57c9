"""Business logic and SQL; the only layer pages, GraphQL, ingest and the CLI call."""
