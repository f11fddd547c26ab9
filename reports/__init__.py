"""ftlab.reports: the DuckDB store, comparison statistics and reports."""
