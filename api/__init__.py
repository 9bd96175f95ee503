"""The HTTP layer: the FastAPI app, its dependencies, errors and a router per resource."""
