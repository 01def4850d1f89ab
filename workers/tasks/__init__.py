"""One module per job kind. Each defines ``KIND``, a body ``<kind>_job(ctx) -> JobResult``
and a thin Celery task named ``task_name(KIND)`` that calls ``run_job``. Register a new
module in ``workers.celery_app.TASK_MODULES``."""
