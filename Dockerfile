# posecompress: API and worker image (CPU only).
#   docker build -t posecompress .
#   docker run -p 8000:8000 posecompress posecompress serve --host 0.0.0.0   # all-in-one
# docker-compose.yml runs `posecompress api` and `posecompress worker` against Redis and
# PostgreSQL instead.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# CPU build of torch first, from the PyTorch CPU index (the PyPI wheel pulls CUDA).
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0

WORKDIR /srv/posecompress
COPY pyproject.toml README.md ./
COPY app ./app
COPY common ./common
COPY workers ./workers
COPY model_store ./model_store
COPY pose_core ./pose_core
RUN pip install .

RUN useradd --create-home --uid 10001 posecompress \
    && mkdir -p /data \
    && chown posecompress:posecompress /data
USER posecompress

ENV POSECOMPRESS_DATA_DIR=/data \
    POSECOMPRESS_HOST=0.0.0.0 \
    POSECOMPRESS_PORT=8000
VOLUME ["/data"]
EXPOSE 8000

HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]

CMD ["posecompress", "api"]
