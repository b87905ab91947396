# One Dockerfile, a target per image:
#   docker build --target controller -t ghcr.io/ironlb/ironlb-controller:TAG .
#   docker build --target speaker    -t ghcr.io/ironlb/ironlb-speaker:TAG .
# (make images does both.) The BPF objects are committed and embedded in
# the speaker by bpf2go: no clang is needed here. Static binaries on
# distroless/static.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/ \
      ./cmd/ironlb-controller ./cmd/ironlb-speaker ./cmd/ironlbctl

FROM gcr.io/distroless/static-debian12:nonroot AS controller
COPY --from=build /out/ironlb-controller /ironlb-controller
USER 65532:65532
ENTRYPOINT ["/ironlb-controller"]

# The speaker runs as root in the host's network namespace with a few
# capabilities (see manifests/speaker.yaml); ironlbctl comes along for
# debugging from inside the pod.
FROM gcr.io/distroless/static-debian12 AS speaker
COPY --from=build /out/ironlb-speaker /out/ironlbctl /
ENTRYPOINT ["/ironlb-speaker"]
