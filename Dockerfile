# One image for every tapstream service; the command picks the service:
#   python -m tapstream.tapper | tapstream.vdsa | tapstream.journal | tapstream.replicator, or `tapstream ...`
# Build from the repository root: docker build -t tapstream/tapstream:0.1.0 .

# Stage 1: build the wheel (lib/ and services/*/ gathered into one `tapstream` package, see pyproject)
# and wheels of every dependency, so the runtime image needs no compiler.
FROM python:3.11-slim-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY lib lib
COPY services services
COPY cli cli
COPY schemas schemas
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# Stage 1b: the tapper's compiled data path (services/tapper/native: Rust, PyO3 + rdkafka, with
# librdkafka built from source) as an abi3 wheel for the runtime's Python 3.11 (Debian bookworm's).
FROM rust:1-bookworm AS native
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake pkg-config libssl-dev python3-venv \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /maturin && /maturin/bin/pip install --no-cache-dir "maturin>=1.5,<2"
COPY services/tapper/native /native
RUN /maturin/bin/maturin build --release -m /native/Cargo.toml -o /wheels-native

# Stage 2: runtime. qemu-utils and the libnbd tools let an operator create, inspect and compare
# volumes and exports from inside the tapper's container (qemu-img, nbdinfo, nbdcopy).
FROM python:3.11-slim-bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends qemu-utils libnbd-bin ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 tapstream \
 && useradd --system --uid 10001 --gid tapstream --home-dir /var/lib/tapstream --create-home tapstream \
 && mkdir -p /var/lib/tapstream/volumes /var/lib/tapstream/tapper /var/lib/tapstream/replicas \
 && chown -R tapstream:tapstream /var/lib/tapstream
COPY --from=build /wheels /wheels
COPY --from=native /wheels-native /wheels-native
RUN pip install --no-cache-dir --no-index --find-links /wheels tapstream \
 && pip install --no-cache-dir --no-index /wheels-native/*.whl \
 && rm -rf /wheels /wheels-native
ENV PYTHONUNBUFFERED=1 \
    TAPSTREAM_ENV_FILE="" \
    TAPSTREAM_METRICS_HOST=0.0.0.0
WORKDIR /var/lib/tapstream
USER 10001:10001
EXPOSE 10809 9400
CMD ["tapstream", "--help"]
