# The project's services (ingest, processors, simulators, migrations, seed) in one image; docker-compose.yml picks
# the command. Configuration comes only from the environment (the same names as local runs); .env is never copied.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/app \
    RPM_STATE_DIR=/var/tmp/rpm-telemetry

# uid/gid 1883 is the eclipse-mosquitto image's `mosquitto` user: broker-sync writes the broker's password file
# and ACL (mode 600) into a volume that the broker, dropping to that user, must read.
RUN groupadd --system --gid 1883 rpm \
    && useradd --system --uid 1883 --gid 1883 --home-dir /app --shell /usr/sbin/nologin rpm \
    && mkdir -p /var/tmp/rpm-telemetry/mosquitto /var/tmp/rpm-telemetry/run \
    && chown -R rpm:rpm /var/tmp/rpm-telemetry

WORKDIR /app
# Dependencies first, so a code change does not reinstall them.
COPY pyproject.toml README.md ./
RUN mkdir -p ingest processors migrations device_simulators \
    && touch ingest/__init__.py processors/__init__.py migrations/__init__.py device_simulators/__init__.py \
    && pip install . \
    && pip uninstall -y rpm-telemetry \
    && rm -rf ingest processors migrations device_simulators
COPY ingest ./ingest
COPY processors ./processors
COPY migrations ./migrations
COPY device_simulators ./device_simulators
COPY scripts ./scripts

USER rpm
CMD ["python", "-m", "ingest", "serve"]
