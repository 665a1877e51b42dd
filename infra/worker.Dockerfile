# Container image of the tool-backed worker Lambda (OCR, office documents, audio and
# video, PDF rendering): the same `runconvert` engines with the tools they drive, from
# the same Debian packages the test suite installs. A Rust Lambda binary speaks the
# Lambda runtime API itself, so a plain Debian base works as a Lambda container image.
# Built by `sam build` from template.yaml (PackageType: Image); it cannot be built on the
# development machines (no container engine there).
FROM docker.io/library/rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p runconvert-aws --bin worker

FROM docker.io/library/debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates poppler-utils tesseract-ocr tesseract-ocr-eng ffmpeg \
      libreoffice-writer-nogui libreoffice-calc-nogui libreoffice-impress-nogui python3-uno chromium \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/worker /usr/local/bin/runconvert-worker
# The worker Lambda (functions/aws/src/bin/worker.rs) speaks the Lambda runtime API.
ENTRYPOINT ["/usr/local/bin/runconvert-worker"]
