"""Transport backends for kvplan: one class per transport, each implementing
`kvplan.transport.Transport` (register, metadata / add_peer, prepare, execute, serve,
copy_local, close) on top of `_base.BackendBase`. They are found by name through the
``kvplan.backends`` entry points, so load them with `kvplan.load_backend`:

>>> from kvplan import load_backend
>>> backend = load_backend("host")
>>> type(backend).__name__, backend.name
('HostBackend', 'host')
>>> backend.close()
"""
