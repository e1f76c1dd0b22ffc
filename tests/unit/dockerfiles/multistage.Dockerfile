# syntax=docker/dockerfile:1.7
# A Go service built in stages; `--target test` needs only deps and test.
ARG GO_VERSION=1.22
ARG BASE=alpine:3.19
ARG BUILDER=golang:${GO_VERSION}-alpine

FROM --platform=$BUILDPLATFORM ${BUILDER} AS deps
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download

FROM deps AS test
COPY . .
RUN --mount=type=cache,target=/root/.cache/go-build go test ./...

FROM deps AS build
ARG TARGETOS TARGETARCH
COPY . .
RUN --mount=type=cache,target=/root/.cache/go-build \
    --mount=type=bind,from=deps,source=/src/go.mod,target=/tmp/go.mod \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH go build -o /out/app .

FROM ${BASE} AS release
RUN apk add --no-cache ca-certificates
COPY --from=build --chmod=0755 /out/app /usr/local/bin/app
USER 65534:65534
EXPOSE 8080/tcp
ENTRYPOINT ["/usr/local/bin/app"]
