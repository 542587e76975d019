# Sourced by build.sh and check.sh: pick the interpreter that reads cluster profiles (PyYAML needed).
py="${PYTHON:-}"
if [ -z "$py" ]; then
    if [ -x "$repo/.venv/bin/python" ]; then py="$repo/.venv/bin/python"; else py="$(command -v python3 || true)"; fi
fi
if [ -z "$py" ] || ! "$py" -c 'import yaml' 2>/dev/null; then
    echo "container: no Python with PyYAML to read the cluster profile (tried ${py:-python3}); run \`make setup\` first" >&2
    exit 2
fi
