"""The HTTP service: app factory, schemas, engine and store."""
