"""ftlab.runner: spec schema and loading, models, data, methods, stage execution, CLI."""
