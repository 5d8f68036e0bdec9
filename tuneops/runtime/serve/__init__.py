"""`tuneops serve`: a TGI-compatible HTTP server (FastAPI + uvicorn) with continuous batching, Prometheus
metrics, JSON logs and input-drift detection. See app.py for the routes and engine.py for generation."""
