# A stand-in SGLang base, so that docker/Dockerfile.sglang's own steps run where no SGLang image can be
# pulled (scripts/images.sh): Debian's /usr/bin/python3 with pip, and an `sglang` package that only has a
# version and refuses to serve. It has no SGLang, no CUDA and no torch: an image built on it is tagged
# -standin and proves the Dockerfile's steps, not that SGLang runs (docs/helm.md, "Images").
ARG PYTHON_IMAGE=localhost/mimo-serve/python-standin:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}
RUN set -eux; \
    apt-get update; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-pip; \
    rm -rf /var/lib/apt/lists/* /usr/lib/python3.11/EXTERNALLY-MANAGED; \
    pkg=/usr/local/lib/python3.11/dist-packages/sglang; \
    mkdir -p "$pkg"; \
    echo '__version__ = "0.0.0+standin"' > "$pkg/__init__.py"; \
    printf '%s\n' 'import sys' \
      'sys.exit("this is the stand-in SGLang base (docker/standin/sglang.Dockerfile): no SGLang to launch")' \
      > "$pkg/launch_server.py"; \
    python3 -c "import sglang; print('sglang', sglang.__version__)"
