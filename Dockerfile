FROM python:3.11-slim
# Mosquitto 2.0 from Debian: `iotdeck mqtt-broker` runs it (docker-compose's broker service)
RUN apt-get update && apt-get install -y --no-install-recommends mosquitto \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /srv/iotdeck
COPY pyproject.toml README.md ./
COPY app app
COPY rules rules
COPY pages pages
COPY components components
COPY seeds seeds
COPY migrations migrations
RUN pip install --no-cache-dir . && useradd --system --home /srv/iotdeck iotdeck \
    && mkdir -p /srv/iotdeck/data && chown iotdeck /srv/iotdeck/data
USER iotdeck
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/health/ready')"
CMD ["iotdeck", "serve", "--host", "0.0.0.0"]
