# A synthesis worker (mrisynth worker) on an NVIDIA GPU: onnxruntime-gpu on CUDA 12 with cuDNN 9, no
# torch. Python 3.11 is uv's standalone build, as Ubuntu 22.04 ships 3.10. Build context: the
# repository root (docker/compose.yaml).
FROM nvidia/cuda:12.6.3-cudnn-runtime-ubuntu22.04

COPY --from=ghcr.io/astral-sh/uv:0.8.14 /uv /usr/local/bin/uv
ENV UV_PYTHON_INSTALL_DIR=/opt/python \
    UV_NO_CACHE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN uv venv --python 3.11 /opt/venv

WORKDIR /app
COPY pyproject.toml README.md constraints.txt ./
COPY mrisynth mrisynth
COPY worker worker
COPY cli cli
RUN uv pip install -c constraints.txt ".[gpu]"

# Same uid as the api image: both write the shared data volume.
RUN useradd --create-home --uid 1000 mrisynth && mkdir /data && chown mrisynth /data
USER mrisynth

CMD ["mrisynth", "worker"]
