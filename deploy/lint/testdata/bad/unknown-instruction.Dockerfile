# An instruction Docker does not know.
FROM debian:trixie-slim
RUNN true
