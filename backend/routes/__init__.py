"""REST routers, one per resource; mounted by :func:`backend.app.create_app`."""
