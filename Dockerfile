# One image for every rnntune role: the job service, a Ray head or worker (which run the
# training jobs), the model server and an MLflow server. The role is the first argument:
#   docker run rnntune service | ray-head | ray-worker | model-server | mlflow | job SPEC
#
# CPU torch by default. For GPUs: --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128
# (the CUDA wheels bring their own CUDA runtime; the host needs the NVIDIA driver), and
# optionally a CUDA base with Python 3.11: --build-arg BASE_IMAGE=<cuda image with python3.11>.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS builder
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /src
# Dependencies first: this layer is rebuilt only when the pins change, not on every source edit.
COPY pyproject.toml constraints.txt ./
COPY deploy/bundle/requirements.py deploy/bundle/requirements.py
RUN pip install --index-url "${TORCH_INDEX}" torch==2.13.0 \
 && python deploy/bundle/requirements.py --extra cluster > /tmp/requirements.txt \
 && pip install -c constraints.txt -r /tmp/requirements.txt
COPY lightning_modules/ lightning_modules/
COPY tune/ tune/
COPY service/ service/
COPY deploy/ deploy/
RUN pip install --no-deps .

FROM ${BASE_IMAGE} AS runtime
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin rnntune
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    RNNTUNE_HOME=/home/rnntune/.rnntune \
    RAY_USAGE_STATS_ENABLED=0
WORKDIR /home/rnntune
COPY --chown=rnntune:rnntune examples/ examples/
USER 10001
# service / model server 8000, MLflow 5000, Ray GCS 6379, Ray dashboard + Jobs API 8265
EXPOSE 8000 5000 6379 8265
HEALTHCHECK --interval=30s --timeout=10s --start-period=90s --retries=3 \
    CMD ["python", "-m", "deploy.serving.healthcheck"]
ENTRYPOINT ["python", "-m", "deploy.serving.entrypoint"]
CMD ["service"]
