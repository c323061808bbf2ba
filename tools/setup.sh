#!/usr/bin/env bash
# Installs what Loom needs on a fresh Debian 12 machine: build tools and libraries from apt, and the
# Python virtual environment (.venv) for tests, benchmarks and tools. Safe to run again: it only
# installs what is missing.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
pkgs=(build-essential cmake ninja-build pkg-config git ca-certificates python3 python3-venv
      python3-jinja2 libabsl-dev nlohmann-json3-dev libpcre2-dev libgtest-dev libgmock-dev
      libbenchmark-dev clang clang-format libclang-rt-14-dev libcpp-httplib-dev
      prometheus-cpp-dev prometheus libgrpc++-dev libprotobuf-dev
      protobuf-compiler protobuf-compiler-grpc
      python3-torch python3-numpy python3-pytest libopenblas0-pthread)  # tools/duo_calibrate
# (Debian's torch, offline; OpenBLAS: with the default reference BLAS torch is ~15x slower)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The venv uses Debian's interpreter so that it matches the system packages.
if [ ! -x "$root/.venv/bin/python" ]; then
  /usr/bin/python3 -m venv "$root/.venv"
fi
stamp="$root/.venv/.requirements.sha256"
want="$(sha256sum "$root/requirements.txt" | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  "$root/.venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$root/requirements.txt"
  echo "$want" > "$stamp"
fi
