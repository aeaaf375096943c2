# syntax=docker/dockerfile:1
# Federation broker image: gunicorn (sync workers) serving portal_sso.wsgi as uid 10001.
# Build:  docker build -t portal-sso .        Run: see deploy/README.md
# For reproducible builds, pin the base image by digest (python:3.11-slim-bookworm@sha256:...).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: the virtualenv with the pinned requirements ------------------------------------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/venv
COPY requirements.txt /tmp/requirements.txt
# No compiler in this image, on purpose. The C extensions must come as manylinux wheels:
# xmlsec and lxml each bundle their own libxml2 and must bundle the SAME one (see
# requirements.txt); an sdist build of either would link the system libxml2 instead and make
# `import xmlsec` fail at runtime. --only-binary turns that into a clear build-time error.
RUN /opt/venv/bin/pip install \
        --only-binary=xmlsec,lxml,cryptography,cffi,psycopg-binary \
        -r /tmp/requirements.txt

# --- runtime -------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="portal-sso" \
      org.opencontainers.image.description="SAML 2.0 / OpenID Connect federation broker (Django, gunicorn)"

# xmlsec1 is the binary pysaml2's default crypto backend runs to sign/verify/decrypt XML;
# libxmlsec1-openssl is the crypto engine it loads. On bookworm xmlsec1 already depends on the
# four libraries; they are listed so the runtime requirement is explicit, not incidental.
# (The Python xmlsec/lxml wheels bundle their own libxml2/libxmlsec1 and do not use these.)
# ca-certificates: TLS to IdP metadata, JWKS and token endpoints.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        xmlsec1 \
        libxmlsec1 \
        libxmlsec1-openssl \
        libxml2 \
        libxslt1.1 \
        ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# A fixed, numeric uid/gid: Kubernetes runAsNonRoot can only verify a numeric USER, and
# volume ownership is predictable. No login shell, no home directory of its own.
RUN groupadd --system --gid 10001 broker \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin broker

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DJANGO_SETTINGS_MODULE=portal_sso.settings \
    STATIC_ROOT=/app/static \
    BROKER_VAR_DIR=/app/var

WORKDIR /app
COPY --from=build /opt/venv /opt/venv
# Code and static files stay owned by root: the broker process can read but never modify them.
COPY manage.py ./
COPY portal_sso/ portal_sso/
COPY broker/ broker/
COPY templates/ templates/
COPY deploy/ deploy/

# collectstatic imports the settings, which refuse to load without a SECRET_KEY when DEBUG is
# off. The throwaway values are set on this RUN line only, so they never reach the image's
# environment; the SQLite URL keeps settings from creating var/ (no database is opened).
# Then: precompile the app's bytecode (the code is read-only at run time), create the writable
# var/ used only by the embedded (no DATABASE_URL/REDIS_URL) mode, and fail the build now if
# the XML security stack is broken (libxml2 mismatch, missing xmlsec1).
RUN SECRET_KEY=build-only DEBUG=0 DATABASE_URL=sqlite:////tmp/build.db \
        python manage.py collectstatic --noinput \
    && python -m compileall -q manage.py portal_sso broker \
    && install -d -o 10001 -g 10001 -m 0700 /app/var \
    && xmlsec1 --version \
    && python -c "import lxml.etree, xmlsec; from saml2.sigver import get_xmlsec_binary; print(get_xmlsec_binary())"

USER 10001:10001

# 8000: the broker. 8443: optional second listener (GUNICORN_ADMIN_BIND), plain HTTP too.
EXPOSE 8000 8443

# Liveness of the process only (/readyz checks PostgreSQL and Redis). No curl in slim: urllib.
# Host is BASE_URL's host, because ALLOWED_HOSTS in production holds only that host; /healthz
# is exempt from the HTTPS redirect. ProxyHandler({}) ignores any HTTP(S)_PROXY set for egress.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os,urllib.parse as p,urllib.request as r;b=os.environ.get('GUNICORN_BIND','0.0.0.0:8000').split(',')[0];r.build_opener(r.ProxyHandler({})).open(r.Request('http://127.0.0.1:'+b.rsplit(':',1)[1]+'/healthz',headers={'Host':p.urlsplit(os.environ.get('BASE_URL','http://127.0.0.1:8000')).netloc}),timeout=4)"]

# Gunicorn is PID 1: it handles SIGTERM as a graceful shutdown (graceful_timeout) and reaps
# its workers. Give `docker stop -t` / terminationGracePeriodSeconds more than graceful_timeout.
CMD ["gunicorn", "-c", "deploy/gunicorn.conf.py", "portal_sso.wsgi"]
