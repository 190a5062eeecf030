# Steerboard images. `server` (default): web + ingest worker. `trainer`: adds CPU-only torch for the
# demo GRPO run (python -m trainer_agent.demo). Build: docker compose build (see docker-compose.yml).
FROM python:3.11-slim AS server
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY . .
# Editable install: `steerboard db upgrade` finds migrations/ beside the server package.
# orjson and hiredis speed up ingest (listed here until pyproject.toml names them).
RUN pip install -e ".[server]" orjson hiredis \
 && useradd --create-home --uid 10001 steerboard \
 && mkdir -p /app/steerboard-data && chown steerboard /app/steerboard-data
USER steerboard
EXPOSE 8000
CMD ["steerboard", "serve"]

FROM server AS trainer
USER root
# The CPU build of torch; the default PyPI wheel brings CUDA (gigabytes) the demo does not need.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install --index-url "${TORCH_INDEX_URL}" torch && pip install -e ".[demo]"
USER steerboard
CMD ["python", "-m", "trainer_agent.demo", "--redis-url", "redis://redis:6379/0", "--steps", "300"]
