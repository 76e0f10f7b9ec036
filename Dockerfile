# syntax=docker/dockerfile:1
# queue-manager: one image for the API (`qm-api`) and the workers (`dramatiq actors …`),
# and a separate small target for the local SQS server used by compose.yaml.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY api ./api
COPY actors ./actors
COPY queue_manager ./queue_manager
COPY schemas ./schemas
COPY broker.py ./
RUN python -m venv /venv && /venv/bin/pip install -c constraints.txt ".[tracing]"

FROM python:3.11-slim AS build-sqs
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /venv-sqs && /venv-sqs/bin/pip install ministack==1.5.33

# The local SQS-compatible server (ministack pins botocore exactly: it gets its own venv).
FROM python:3.11-slim AS local-sqs
RUN useradd --create-home --uid 10001 qm && mkdir -p /state && chown qm /state
COPY --from=build-sqs /venv-sqs /venv-sqs
USER 10001
ENV GATEWAY_PORT=9324 BIND_HOST=0.0.0.0 SERVICES=sqs PERSIST_STATE=1 STATE_DIR=/state LOG_LEVEL=WARNING
EXPOSE 9324
HEALTHCHECK --interval=10s --timeout=3s CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:9324/_ministack/health', timeout=2)"]
CMD ["/venv-sqs/bin/ministack"]

# The application: API by default; run the workers with `dramatiq actors --processes 2 --threads 10`.
# /state holds the API's idempotency keys (compose mounts a volume there, so they outlive the container).
FROM python:3.11-slim AS app
RUN useradd --create-home --uid 10001 qm && mkdir -p /state && chown qm /state
COPY --from=build /venv /venv
USER 10001
WORKDIR /home/qm
ENV PATH=/venv/bin:$PATH PYTHONUNBUFFERED=1 QM_HOST=0.0.0.0 QM_PORT=8000 QM_STATE_DIR=/state
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
STOPSIGNAL SIGTERM
CMD ["qm-api"]
