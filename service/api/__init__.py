"""The HTTP transport: FastAPI routes (and so OpenAPI), the ASGI fast path for the array routes, the
Open Inference Protocol's REST routes, the web page, admin routes, API keys. It turns requests into
data-plane calls and data-plane results into responses."""
