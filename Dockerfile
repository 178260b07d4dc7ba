# The relay as a container: the same `gunicorn app:app` as the Procfile, on $PORT (8000 by default).
# docker build -t openai-relay . && docker run -p 8000:8000 openai-relay
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PORT=8000

WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt
COPY . .

# Numeric, so that hosts which require a non-root user (Kubernetes `runAsNonRoot`, as on Sealos) can verify it.
RUN useradd --create-home --uid 10001 relay
USER 10001

EXPOSE 8000
# Asks the relay itself, never through HTTPS_PROXY/HTTP_PROXY (ProxyHandler({}) ignores them).
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request as u; u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8000'), timeout=4)"]

CMD ["gunicorn", "app:app"]
