"""Test support shipped with kvplan: hypothesis strategies (needs the `test` extra)
and a request-level oracle. Never imported by `import kvplan`."""
