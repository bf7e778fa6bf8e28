//! cutover-docker: images and containers through the Docker Engine API (Docker or Podman).
