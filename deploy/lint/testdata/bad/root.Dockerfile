# Clean for Docker, but the image would run as root.
FROM debian:trixie-slim
ENTRYPOINT ["samsyn"]
