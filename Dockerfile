# aio-mcp-gateway: gunicorn with aiohttp workers, SQLite by default.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    DATABASE_URL=sqlite:////data/gateway.db

WORKDIR /app
COPY pyproject.toml README.md gunicorn.conf.py ./
COPY src ./src
COPY plugins ./plugins
RUN pip install . ./plugins/gateway-time \
    && useradd --system --uid 10001 --home-dir /app gateway \
    && mkdir -p /data && chown gateway /data

USER gateway
EXPOSE 4444
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '4444'), timeout=2)"
CMD ["gunicorn", "-c", "gunicorn.conf.py"]
