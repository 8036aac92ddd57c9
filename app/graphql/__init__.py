"""GraphQL API: schema composed from per-domain modules, served at /graphql."""
