"""ftlab.cli: the `ftlab` command line (see `main`)."""
