# One buildnotify hub node, configured from the environment only
# (serve --env-only: no config file is read or generated; README.md,
# "From the environment"). docker-compose.yml runs two of these behind haproxy.
FROM python:3.11-slim

WORKDIR /src
COPY pyproject.toml README.md ./
COPY buildnotify ./buildnotify
COPY migrations ./migrations
RUN pip install --no-cache-dir . \
    && useradd --system --uid 10001 --create-home buildnotify \
    && mkdir /data && chown buildnotify /data

USER buildnotify
WORKDIR /home/buildnotify
# Standalone defaults: all interfaces, SQLite in the /data volume. Behind a
# PROXY-protocol balancer set BUILDNOTIFY_HTTP / BUILDNOTIFY_PB to
# haproxy:tcp:...; for several nodes set BUILDNOTIFY_DATABASE to PostgreSQL.
ENV BUILDNOTIFY_HTTP=tcp:8786:interface=0.0.0.0 \
    BUILDNOTIFY_PB=tcp:8787:interface=0.0.0.0 \
    BUILDNOTIFY_DATABASE=/data/hub.db \
    PYTHONUNBUFFERED=1
VOLUME /data
# 8786: webhooks (HTTP); 8787: PB clients
EXPOSE 8786 8787
CMD ["buildnotify-cli", "serve", "--env-only"]
