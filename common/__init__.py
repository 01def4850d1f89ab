"""What the API and the workers share, free of torch, Celery and FastAPI: the service
settings, the job kinds and their Celery task names, and the typed parameters of each job."""
