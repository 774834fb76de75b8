"""The HTTP layer: dependencies and routes, thin over the :mod:`service` modules."""
