# syntax=docker/dockerfile:1
# kratos-hooks: a static binary on a distroless base, running as an unprivileged user.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/kratos-hooks ./cmd/kratos-hooks

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/kratos-hooks /usr/local/bin/kratos-hooks
# The webhook body and the shipped Kratos configuration, for mounting into Kratos or rendering.
COPY jsonnet/webhook.jsonnet jsonnet/sms.jsonnet jsonnet/profile.jsonnet /usr/share/kratos-hooks/jsonnet/
COPY kratos/kratos.yml kratos/identity.schema.json /usr/share/kratos-hooks/kratos/
USER nonroot:nonroot
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s CMD ["/usr/local/bin/kratos-hooks", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/kratos-hooks"]
CMD ["serve"]
