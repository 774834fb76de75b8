# The HTTP gateway (service.app): FastAPI and uvicorn, no torch and no onnxruntime; the workers
# (worker.Dockerfile) run the networks. Build context: the repository root (docker/compose.yaml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md constraints.txt ./
COPY mrisynth mrisynth
COPY worker worker
COPY service service
COPY cli cli
RUN pip install -c constraints.txt ".[service]"

# Same uid as the worker image: both write the shared data volume.
RUN useradd --create-home --uid 1000 mrisynth && mkdir /data && chown mrisynth /data
USER mrisynth

EXPOSE 8000
CMD ["uvicorn", "service.app:create_app", "--factory", "--host", "0.0.0.0", "--port", "8000"]
