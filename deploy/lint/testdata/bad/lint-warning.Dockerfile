# Parses, but docker build --check warns: "as" in lower case (FromAsCasing) and a shell-form
# ENTRYPOINT (JSONArgsRecommended).
FROM debian:trixie-slim as runtime
USER 10001:10001
ENTRYPOINT samsyn
