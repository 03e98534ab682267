# REDCap SMS opt-out bridge as a container image.
#
#   docker build -t redcap-sms-bridge .
#   docker run -d --name redcap-sms-bridge --restart unless-stopped \
#     -p 127.0.0.1:8080:8080 \
#     -v /etc/redcap-sms-bridge:/etc/redcap-sms-bridge:ro \
#     -v redcap-sms-bridge-data:/var/lib/redcap-sms-bridge \
#     --env-file /etc/redcap-sms-bridge/bridge.env \
#     redcap-sms-bridge
#
# In the mounted config.yaml set server.host: 0.0.0.0 (the port mapping connects from outside
# the container), server.port: 8080 (the health check uses it) and
# storage.path: /var/lib/redcap-sms-bridge/bridge.db (the volume).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    BRIDGE_CONFIG=/etc/redcap-sms-bridge/config.yaml

RUN groupadd --system redcap-sms-bridge \
 && useradd --system --gid redcap-sms-bridge --home-dir /var/lib/redcap-sms-bridge \
      --shell /usr/sbin/nologin redcap-sms-bridge \
 && install -d -o redcap-sms-bridge -g redcap-sms-bridge -m 0700 /var/lib/redcap-sms-bridge

WORKDIR /opt/redcap-sms-bridge
COPY requirements.txt ./
RUN pip install -r requirements.txt
COPY bridge/ bridge/
COPY config/ config/
COPY config.example.yaml README.md ./

USER redcap-sms-bridge
VOLUME ["/var/lib/redcap-sms-bridge"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4).status != 200)"]
# SIGTERM (docker stop) shuts the bridge down cleanly; allow it time with --stop-timeout.
STOPSIGNAL SIGTERM
CMD ["python", "-m", "bridge", "serve"]
