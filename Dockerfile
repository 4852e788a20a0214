# Switchyard image: one binary, every target (`switchyard serve --target=...`).
# Built from Debian bookworm packages only, like the development machines.
FROM debian:bookworm AS build
WORKDIR /src
COPY . .
RUN apt-get update && ./tools/setup && ./tools/build

FROM debian:bookworm
RUN apt-get update && apt-get install -y --no-install-recommends \
      libgrpc++1.51 libprotobuf32 libprometheus-cpp-pull1.0 libprometheus-cpp-core1.0 \
      libsimdjson14 libsqlite3-0 libssl3 libabsl20220623 ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/build/services/switchyard /usr/local/bin/switchyard
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/switchyard"]
