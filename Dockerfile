# embedfn as a container image: the plain server (docker run -p 8000:8000 …) and, unchanged, an
# AWS Lambda container image (the binary speaks the Lambda Runtime API itself when
# AWS_LAMBDA_RUNTIME_API is set), for models over the zip limit such as jina-embeddings-v3.
#
#   docker build -t embedfn .                                   # bakes the default Jina models
#   docker build --build-arg BAKE_MODELS=0 -t embedfn .          # models downloaded at start,
#   docker run -p 8000:8000 -v $PWD/models:/models embedfn       #   or mounted at /models
#
# ONNX Runtime comes from its PyPI wheel, as in scripts/fetch-onnxruntime.sh.

ARG RUST_VERSION=1.95
ARG ORT_VERSION=1.31.1

FROM rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY shared shared
COPY functions functions
RUN cargo build --release --locked --bin embedfn

FROM python:3.11-slim-bookworm AS onnxruntime
ARG ORT_VERSION
RUN pip download --no-deps --only-binary=:all: "onnxruntime==${ORT_VERSION}" -d /wheel \
 && python -c "import zipfile, glob; zipfile.ZipFile(glob.glob('/wheel/*.whl')[0]).extract('onnxruntime/capi/libonnxruntime.so.${ORT_VERSION}', '/ort')"

FROM debian:bookworm-slim
ARG ORT_VERSION
# Models to serve; with BAKE_MODELS=1 they are downloaded into /models while the image builds,
# and the image then starts offline (no hub access needed at run time).
ARG EMBEDDINGS_MODEL_ID=jinaai/jina-embeddings-v3
ARG RERANKER_MODEL_ID=jinaai/jina-reranker-v2-base-multilingual
ARG ONNX_QUANTIZATION=none
ARG BAKE_MODELS=1
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/embedfn /app/embedfn
COPY --from=onnxruntime /ort/onnxruntime/capi/libonnxruntime.so.${ORT_VERSION} /app/lib/
ENV EMBEDDINGS_MODEL_ID=${EMBEDDINGS_MODEL_ID} \
    RERANKER_MODEL_ID=${RERANKER_MODEL_ID} \
    ONNX_QUANTIZATION=${ONNX_QUANTIZATION} \
    MODEL_CACHE_DIR=/models \
    HOST=0.0.0.0 \
    PORT=8000
RUN if [ "$BAKE_MODELS" = 1 ]; then /app/embedfn --init-only; fi
ENV HF_HUB_OFFLINE=${BAKE_MODELS}
# Lambda SnapStart (template.yaml SnapStart=PublishedVersions): Lambda publishes a SnapStart
# version of a container image only if the image carries this label or its runtime calls the
# Runtime API's restore/next. This one does both: when AWS_LAMBDA_INITIALIZATION_TYPE=snap-start
# the binary loads and warms every model, then calls GET /runtime/restore/next itself, so the
# snapshot holds warmed sessions. The snapshot's init runs on Lambda's CPU: ONNX Runtime's
# optimized-graph cache is keyed by the CPU's instruction-set flags (shared/ort/src/ort_cache.rs),
# so a cache baked here (ORT_CACHE_DIR inside the image at build time) serves only a CPU with the
# build machine's flags; on any other the model is optimized again during init (before the
# snapshot, with SnapStart).
LABEL com.amazonaws.lambda.feature.snapstart="Allow"
EXPOSE 8000
ENTRYPOINT ["/app/embedfn"]
