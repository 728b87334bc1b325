#!/usr/bin/env bash
# Installs qunguard the way users do and runs it away from the checkout: build the wheel, install it with
# the embedded extra into a fresh venv, then from a temporary directory run --help, migrate (chDB), check,
# simulate and replay. Catches a wheel that lacks data files or a module only the source tree provides.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/qg-wheel-check.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
# Nothing from the caller's environment or the checkout may leak in.
unset QG_CONFIG QG_CLICKHOUSE_URL QG_KAFKA_URL PYTHONPATH VIRTUAL_ENV

step() { printf 'wheel-check: %s\n' "$*"; }
fail() { printf 'wheel-check: FAILED: %s\n' "$*" >&2; exit 1; }

"$PY" -m venv "$TMP/venv"
VPY="$TMP/venv/bin/python"
"$VPY" -m pip install -q --upgrade pip >"$TMP/pip.log" 2>&1 || { cat "$TMP/pip.log" >&2; fail "upgrade pip"; }

# Build from a copy of the sources, so no stale build/ gets into the wheel and nothing is written into the
# checkout: the working tree's files (tracked and new, not ignored), or with WHEEL_CHECK_REV=<rev> that commit.
mkdir "$TMP/src"
if [ -n "${WHEEL_CHECK_REV:-}" ]; then
  git -C "$ROOT" archive "$WHEEL_CHECK_REV" | tar -C "$TMP/src" -xf -
  step "sources: $(git -C "$ROOT" rev-parse --short "$WHEEL_CHECK_REV")"
else
  (cd "$ROOT" && git ls-files -z -co --exclude-standard \
    | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done | tar --null -T - -cf -) \
    | tar -C "$TMP/src" -xf -
  step "sources: working tree"
fi
"$VPY" -m pip wheel -q --no-deps -w "$TMP/dist" "$TMP/src" >"$TMP/build.log" 2>&1 \
  || { cat "$TMP/build.log" >&2; fail "build the wheel"; }
WHEEL=$(ls "$TMP"/dist/qunguard-*.whl)
step "built $(basename "$WHEEL")"

"$VPY" -m pip install -q "${WHEEL}[embedded]" >"$TMP/install.log" 2>&1 \
  || { cat "$TMP/install.log" >&2; fail "pip install ${WHEEL##*/}[embedded]"; }
step "installed into a fresh venv with the embedded extra"

cd "$TMP"
QG="$TMP/venv/bin/qunguard"
where=$("$VPY" -c "import pipeline, os; print(os.path.dirname(pipeline.__file__))")
case "$where" in "$ROOT"*) fail "pipeline imported from the checkout ($where), not the wheel";; esac

"$QG" --help >"$TMP/help.txt" 2>&1 || { cat "$TMP/help.txt" >&2; fail "qunguard --help"; }
step "qunguard --help: ok"

QG_CLICKHOUSE_URL="chdb:$TMP/chdb" "$QG" migrate >"$TMP/migrate.txt" 2>&1 \
  || { cat "$TMP/migrate.txt" >&2; fail "qunguard migrate (chdb)"; }
step "qunguard migrate (chdb:$TMP/chdb): ok"

rc=0
COLUMNS=200 "$QG" check "加我微信 买彩票稳赚" >"$TMP/check.txt" 2>&1 || rc=$?
[ "$rc" -eq 1 ] || { cat "$TMP/check.txt" >&2; fail "qunguard check: exit $rc, expected 1 (findings)"; }
grep -q "content\." "$TMP/check.txt" || { cat "$TMP/check.txt" >&2; fail "qunguard check: no content.* rule"; }
step "qunguard check: exit 1 with $(grep -c 'content\.' "$TMP/check.txt") content finding row(s)"

"$QG" simulate --events 2000 --quiet --out "$TMP/ev.jsonl" >"$TMP/simulate.txt" 2>&1 \
  || { cat "$TMP/simulate.txt" >&2; fail "qunguard simulate"; }
[ -s "$TMP/ev.jsonl" ] || fail "qunguard simulate wrote nothing"
step "qunguard simulate: $(wc -l <"$TMP/ev.jsonl") records"

"$QG" replay "$TMP/ev.jsonl" --out "$TMP/f.jsonl" >"$TMP/replay.txt" 2>&1 \
  || { cat "$TMP/replay.txt" >&2; fail "qunguard replay"; }
[ -s "$TMP/f.jsonl" ] || { cat "$TMP/replay.txt" >&2; fail "qunguard replay: f.jsonl is empty"; }
step "qunguard replay: $(wc -l <"$TMP/f.jsonl") findings"

# The console's templates, stylesheet and rule texts come from the wheel: sign in and open the pages.
printf 'wheel-check-pw\n' | QG_CONSOLE_USERS="$TMP/users.json" "$QG" console-user add ann --org org1 --role reviewer \
  --password-stdin >"$TMP/user.txt" 2>&1 || { cat "$TMP/user.txt" >&2; fail "qunguard console-user add"; }
"$VPY" - "$TMP" >"$TMP/console.txt" 2>&1 <<'PY' || { cat "$TMP/console.txt" >&2; fail "the console from the wheel"; }
import re, sys
from pathlib import Path
from pipeline.console.app import create_app
from pipeline.console.users import Users
from pipeline.sink.backends import connect
tmp = Path(sys.argv[1])
app = create_app(connect(f"chdb:{tmp / 'chdb'}"), Users(tmp / "users.json"), lambda events: None)
c = app.test_client()
token = re.search(r'name="csrf" value="([^"]+)"', c.get("/login").text).group(1)
assert c.post("/login", data={"name": "ann", "password": "wheel-check-pw", "csrf": token}).status_code == 302
for url in ("/", "/queue", "/static/console.css"):
    r = c.get(url)
    assert r.status_code == 200, (url, r.status_code, r.text[:500])
print("console pages: ok")
PY
step "qunguard console: $(cat "$TMP/console.txt")"
step "passed"
