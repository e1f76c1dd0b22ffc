FROM alpine:3.19 AS base
MAINTAINER someone@example.com
LABEL org.opencontainers.image.title="kitchen sink" \
      version=1.0 \
      "quoted key"=value
ENV PATH=/opt/bin:$PATH HOME=/root
ENV LEGACY some value here
ARG USER=app UID
ADD --chown=app:app --chmod=0644 --link https://example.com/file.tar.gz /opt/
ADD --checksum=sha256:24454f830cdb571e2c4ad15481119c43b3cafd48dd869a9b2945d1036d1dc68d https://example.com/x /x
ADD --keep-git-dir=true https://github.com/moby/buildkit.git#v0.10.1 /buildkit
COPY --parents --exclude=*.md --exclude=*.txt ./a/b/ ./c/ /dst/
COPY ["file with spaces", "/dest dir/"]
RUN --network=none --security=sandbox echo "no network"
RUN ["/bin/sh", "-c", "echo exec form"]
CMD ["--help"]
ENTRYPOINT /bin/entry.sh
VOLUME ["/data", "/logs"]
VOLUME /cache /tmp/x
EXPOSE 80 443/tcp 53/udp
USER ${USER}:${UID}
WORKDIR /home/$USER
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=1m --start-interval=2s --retries=3 \
  CMD wget -qO- http://localhost/ || exit 1
ONBUILD COPY . /app/src
ONBUILD RUN make -C /app/src
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
