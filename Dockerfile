# shmallocd in a container. Two stages:
#   build   debian:bookworm: the project's own install script, a Release
#           build, the unit tests, and an install into /opt/shmalloc.
#   runtime debian:bookworm-slim: runtime libraries, shmallocd, the shmalloc
#           CLI, the example producer/consumer and the default config; runs as
#           the non-root user shmalloc (uid 10001).
# The socket lives in the volume /run/shmalloc; regions are files in
# --shm_dir (/dev/shm by default: size it with --shm-size, or mount a shared
# tmpfs volume there so other containers can map the same regions).
FROM debian:bookworm AS build
COPY deploy/install-deps.sh /src/deploy/install-deps.sh
RUN SHMALLOC_DEPS=core /src/deploy/install-deps.sh && rm -rf /var/lib/apt/lists/*
COPY . /src
WORKDIR /src
RUN cmake --preset release -DSHMALLOC_BUILD_BENCH=OFF -DSHMALLOC_BUILD_INTEGRATION_TESTS=OFF \
 && cmake --build --preset release \
 && ctest --preset release -L unit \
 && cmake --install build/release --prefix /opt/shmalloc \
 && cmake -S examples -B build/examples -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_PREFIX_PATH=/opt/shmalloc \
 && cmake --build build/examples -j2 \
 && install -m 0755 build/examples/producer build/examples/consumer \
      build/examples/arena_example /opt/shmalloc/bin/

FROM debian:bookworm-slim AS runtime
COPY deploy/install-deps.sh /tmp/install-deps.sh
RUN SHMALLOC_DEPS=runtime /tmp/install-deps.sh && rm -rf /var/lib/apt/lists/* /tmp/install-deps.sh \
 && groupadd --system --gid 10001 shmalloc \
 && useradd --system --uid 10001 --gid shmalloc --no-create-home --shell /usr/sbin/nologin shmalloc \
 && install -d -o shmalloc -g shmalloc -m 0770 /run/shmalloc
COPY --from=build /opt/shmalloc/bin/ /opt/shmalloc/sbin/ /usr/local/bin/
COPY deploy/shmallocd.textproto /etc/shmalloc/shmallocd.textproto
USER shmalloc:shmalloc
ENV SHMALLOC_SOCKET=/run/shmalloc/shmalloc.sock
VOLUME ["/run/shmalloc"]
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["shmalloc", "health"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["shmallocd"]
CMD ["--socket=/run/shmalloc/shmalloc.sock", "--shm_dir=/dev/shm", \
     "--config=/etc/shmalloc/shmallocd.textproto"]
