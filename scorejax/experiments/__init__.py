"""Experiments: one module per method, each with run(config, workdir)."""
