# shopguard container image: a static binary on distroless, running as the
# unprivileged "nonroot" user (uid 65532). Build: docker build -t shopguard .
FROM golang:1.26.8 AS build
WORKDIR /src
# Modules first, so source edits do not invalidate the download layer.
COPY go.mod go.sum ./
RUN go mod download && go mod verify
COPY . .
# VERSION ends up in shopguard_build_info{version}.
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w -X main.version=${VERSION}" \
      -o /out/shopguard ./cmd/shopguard

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/shopguard /shopguard
USER nonroot:nonroot
# Metrics, /healthz and /readyz. shopguard listens on loopback unless its
# config says otherwise; deploy/shopguard.yml sets 0.0.0.0:9464.
EXPOSE 9464
ENTRYPOINT ["/shopguard"]
