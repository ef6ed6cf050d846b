# syntax=docker/dockerfile:1
# The Gatehouse image, as deploy/kubernetes/deployment.yaml runs it
# (ghcr.io/gatehouse-dev/gatehouse): a static binary on distroless, as the
# non-root user 65532, reading its config from /etc/gatehouse.
#
#   docker build -t ghcr.io/gatehouse-dev/gatehouse:dev .
#
# deploy/kubernetes/manifests_test.go checks that this file and the
# manifests agree (user, ports, entrypoint, image name, Go version).

FROM golang:1.26.8 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/gatehouse ./cmd/gatehouse

FROM gcr.io/distroless/static-debian12:nonroot
LABEL org.opencontainers.image.source="https://github.com/gatehouse-dev/gatehouse" \
      org.opencontainers.image.title="gatehouse" \
      org.opencontainers.image.description="A gRPC-first API gateway"
COPY --from=build /out/gatehouse /usr/local/bin/gatehouse
USER 65532:65532
# 8080: the edge listener; 9901: the admin listener (probes, metrics, admin API).
EXPOSE 8080 9901
ENTRYPOINT ["/usr/local/bin/gatehouse"]
CMD ["serve", "-c", "/etc/gatehouse/gatehouse.yaml"]
