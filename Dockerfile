# islet-cds: CDS Hooks 2.0 / Da Vinci CRD service. Build: docker build -t islet-cds .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    ISLET_CDS_DATABASE_URL=sqlite:////data/islet-cds.sqlite

WORKDIR /app
COPY pyproject.toml README.md ./
COPY service ./service
COPY cards ./cards
RUN pip install . \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin islet \
    && mkdir -p /data && chown islet /data

USER islet
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status == 200 else 1)"

# Authentication is on by default: mount a trusted-issuers file and set ISLET_CDS_TRUSTED_ISSUERS,
# ISLET_CDS_ALLOWED_FHIR_SERVERS and ISLET_CDS_PUBLIC_BASE_URL (see README).
CMD ["islet-cds", "serve", "--host", "0.0.0.0", "--port", "8080"]
