# A stand-in for python:3.11-slim-bookworm, for machines that cannot pull it (scripts/images.sh, BASE=local):
# Debian bookworm's own Python 3.11 on a debootstrap'd base, with `python` on PATH and venv/ensurepip,
# which is what docker/Dockerfile uses of the official image. Not for release builds.
ARG DEBIAN_IMAGE=localhost/mimo-serve/debian:bookworm
FROM ${DEBIAN_IMAGE}
ENV LANG=C.UTF-8
RUN set -eux; \
    apt-get update; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv ca-certificates; \
    rm -rf /var/lib/apt/lists/*; \
    ln -s /usr/bin/python3 /usr/local/bin/python; \
    python -m venv /tmp/check && rm -rf /tmp/check
CMD ["python3"]
