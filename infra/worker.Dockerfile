# Container image of the tool-backed worker Lambda (OCR, office documents, audio and
# video, PDF rendering): the same `runconvert` engines with the tools they drive, from
# the same Debian packages the test suite installs. A Rust Lambda binary speaks the
# Lambda runtime API itself, so a plain Debian base works as a Lambda container image.
# Built by `sam build` from template.yaml (PackageType: Image); it cannot be built on the
# development machines (no container engine there).
FROM docker.io/library/rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p runconvert

FROM docker.io/library/debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates poppler-utils tesseract-ocr tesseract-ocr-eng ffmpeg \
      libreoffice-writer-nogui libreoffice-calc-nogui libreoffice-impress-nogui \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/runconvert /usr/local/bin/runconvert
# The worker entry point (a binary over the runconvert-worker crate, run by Lambda)
# arrives with the AWS deployment; until then the image runs the one-shot commands.
ENTRYPOINT ["/usr/local/bin/runconvert"]
