# syntax=docker/dockerfile:1
# memfrag-agent, the per-node daemon of charts/memfrag-agent. Build from the repository root:
#
#   docker build -t memfrag-agent:dev --build-arg REVISION="$(git rev-parse HEAD)" \
#     --build-arg CREATED="$(git show -s --format=%cI HEAD)" .
#
# The base is pinned by digest, its tag beside it for people: the digest of the tag's
# multi-architecture index, as recorded with the tag in kuotunyu/CareRisk-48H
# (scripts/build_hf_space_supply_chain.py, which also has the linux/amd64 manifest's
# sha256:83f339c1be6340ae1096010fdccf6552ac932d8f410d45d206014916bdf37e48) and in
# Alanjiao1988/J-space-observation (infra/azure/scripts/09_build_parser_v2_eval.sh). A new tag
# needs its own digest (`docker buildx imagetools inspect python:TAG` prints it).
# Every Python package is pinned by version and hash in deploy/image-lock.txt (how to
# regenerate it is in its header); deploy/image_prune.py leaves out what the agent never imports.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY deploy/image-lock.txt ./
# The locked closure and build tools (each file checked against its hash; nothing resolved),
# then the agent's wheel on top. No bytecode yet: compileall writes it once, below.
RUN python -m venv /opt/memfrag-agent \
    && /opt/memfrag-agent/bin/pip install --no-compile --no-deps --require-hashes \
       --requirement image-lock.txt
COPY pyproject.toml README.md deploy/image_prune.py ./
COPY agent/ agent/
# image_prune.py deletes kubernetes' unused parts, fails if `pip check` finds anything but the
# requirements it leaves out, and imports every agent module and sends a client request in
# what is left.
# The .pyc pip would write record their source's mtime, and a builder need not keep mtimes
# across the COPY --from below (one moved every source one second, so every import compiled in
# memory and the uninstall hook peaked near 150 MiB, OOMKilled at 128 Mi). Checked-hash .pyc are
# validated by a hash of the source instead, whatever the builder does with mtimes;
# unchecked-hash would skip even that read, but would also run stale bytecode if a source were
# ever changed in place.
RUN /opt/memfrag-agent/bin/pip wheel --no-build-isolation --no-deps --wheel-dir /wheels . \
    && /opt/memfrag-agent/bin/pip install --no-compile --no-deps /wheels/memfrag_agent-*.whl \
    && /opt/memfrag-agent/bin/python image_prune.py /opt/memfrag-agent \
    && /opt/memfrag-agent/bin/memfrag-agent --version \
    && /opt/memfrag-agent/bin/pip uninstall --yes setuptools pip \
    && /opt/memfrag-agent/bin/python -m compileall -q -f -j 0 --invalidation-mode checked-hash \
       /opt/memfrag-agent

FROM ${PYTHON_IMAGE}
ARG PYTHON_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
# RFC 3339; the commit's time (as above) keeps rebuilds of one commit identical.
ARG CREATED=unknown
# tests/cluster/image.py also sets the revision label, created and MEMFRAG_REVISION at commit
# time (buildah's layer cache would keep an older build's values for these cached steps).
LABEL org.opencontainers.image.title="memfrag-agent" \
      org.opencontainers.image.description="Detects, reports and remediates high-order memory fragmentation on Kubernetes nodes" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="https://github.com/memfrag-agent/memfrag-agent" \
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
