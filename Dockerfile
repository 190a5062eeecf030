# Steerboard images, installed from the wheel as users install it.
#   dist     builds the sdist and the wheel (npm for the vendor JS, python -m build): scripts/build-dist.sh,
#            which runs the same way outside Docker (`make dist`)
#   server   (web + ingest worker) the wheel with the server extra, run as a non-root user
#   trainer  adds CPU-only torch and the demo extra for the demo GRPO run (python -m trainer_agent.demo)
# Build: docker compose build (see docker-compose.yml), or docker build --target server -t steerboard .

FROM node:22-bookworm-slim AS dist
# Node comes with the image; Python only builds a pure-Python wheel here (the runtime stages use python:3.11).
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/build \
 && /opt/build/bin/pip install --no-cache-dir "build==1.6.1"
WORKDIR /src
COPY . .
RUN PYTHON=/opt/build/bin/python sh scripts/build-dist.sh /dist

FROM python:3.11-slim AS server
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=dist /dist/ /dist/
# The wheel's own path, not `steerboard` from an index: nothing else can stand in for it.
RUN pip install "$(ls /dist/steerboard-*.whl)[server]" \
 && useradd --create-home --uid 10001 steerboard \
 && install -d -o steerboard /home/steerboard/steerboard-data
USER steerboard
# The data directory (the default SQLite database: mount a volume on /home/steerboard/steerboard-data to
# keep it); docker-compose.yml uses PostgreSQL instead.
WORKDIR /home/steerboard
# Inside a container the server must listen on all interfaces to be reachable through a published port.
ENV STEERBOARD_HOST=0.0.0.0
EXPOSE 8000
CMD ["steerboard", "serve"]

FROM server AS trainer
USER root
# The CPU build of torch; the default PyPI wheel brings CUDA (gigabytes) the demo does not need.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install --index-url "${TORCH_INDEX_URL}" torch \
 && pip install "$(ls /dist/steerboard-*.whl)[demo]"
USER steerboard
CMD ["python", "-m", "trainer_agent.demo", "--redis-url", "redis://redis:6379/0", "--steps", "300"]
