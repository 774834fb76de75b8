"""The FastAPI gateway: queues dataset jobs, reports their progress and serves the bundles."""
