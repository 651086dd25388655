"""``search serve``: searches as a service (FastAPI app, job queue in the study storage, web page, client)."""
