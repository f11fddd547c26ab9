"""The spec: schema, loading, errors."""
