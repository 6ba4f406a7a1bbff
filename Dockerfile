# syntax=docker/dockerfile:1
# memfrag-agent, the per-node daemon of charts/memfrag-agent. Build from the repository root:
#
#   docker build -t memfrag-agent:dev --build-arg REVISION="$(git rev-parse HEAD)" .
#
# Every Python package is pinned by deploy/image-constraints.txt (how to regenerate it is in its
# header); the build fails if the pins do not satisfy memfrag-agent's own requirements.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY deploy/image-constraints.txt ./
# The pinned closure and build tools, then the agent's wheel on top without resolving again.
RUN python -m venv /opt/memfrag-agent \
    && /opt/memfrag-agent/bin/pip install --requirement image-constraints.txt
COPY pyproject.toml README.md ./
COPY agent/ agent/
# The .pyc pip writes record their source's mtime, and a builder need not keep mtimes across the
# COPY --from below (one moved every source one second, so every import compiled in memory and
# the uninstall hook peaked near 150 MiB, OOMKilled at 128 Mi). Checked-hash .pyc are validated
# by a hash of the source instead, whatever the builder does with mtimes; unchecked-hash would
# skip even that read, but would also run stale bytecode if a source were ever changed in place.
RUN /opt/memfrag-agent/bin/pip wheel --no-build-isolation --no-deps --wheel-dir /wheels . \
    && /opt/memfrag-agent/bin/pip install --no-deps /wheels/memfrag_agent-*.whl \
    && /opt/memfrag-agent/bin/pip check \
    && /opt/memfrag-agent/bin/memfrag-agent --version \
    && /opt/memfrag-agent/bin/pip uninstall --yes setuptools wheel pip \
    && /opt/memfrag-agent/bin/python -m compileall -q -f -j 0 --invalidation-mode checked-hash \
       /opt/memfrag-agent

FROM ${PYTHON_IMAGE}
ARG PYTHON_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="memfrag-agent" \
      org.opencontainers.image.description="Detects, reports and remediates high-order memory fragmentation on Kubernetes nodes" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"
COPY --from=builder /opt/memfrag-agent /opt/memfrag-agent
ENV PATH=/opt/memfrag-agent/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# The commit, for the revision label of memfrag_build_info (the agent reads it at start).
ENV MEMFRAG_REVISION=${REVISION}
# Non-root by default (`status`, `check`, `cleanup`); the DaemonSet runs the agent as root in a
# privileged container, which /proc/sys/vm and the per-node compact files require.
USER 65532:65532
ENTRYPOINT ["memfrag-agent"]
CMD ["--help"]
