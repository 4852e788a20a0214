# Switchyard image: one binary, every target (`switchyard serve --target=...`).
# Built from Debian bookworm packages only, like the development machines. The
# runtime needs LibTorch, the OpenMP OpenBLAS (BLAS and LAPACK for LibTorch and
# FAISS, which is linked statically) and libgomp.
FROM debian:bookworm AS build
WORKDIR /src
COPY . .
RUN apt-get update && ./tools/setup && ./tools/build

FROM debian:bookworm
RUN apt-get update && apt-get install -y --no-install-recommends \
      libgrpc++1.51 libprotobuf32 libprometheus-cpp-pull1.0 libprometheus-cpp-core1.0 \
      libsimdjson14 libsqlite3-0 libssl3 libabsl20220623 ca-certificates \
      libtorch1.13 libopenblas0-openmp liblapack3 libgomp1 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/build/services/switchyard /usr/local/bin/switchyard
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/switchyard"]
