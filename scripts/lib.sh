# Shared shell functions for scripts/*. Source it; it defines functions and a few variables only.
# shellcheck shell=bash

SL_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SL_VENV="$SL_REPO/.venv"
SL_VAR="$SL_REPO/var"

# The test cluster is private to this project: its own name and port keep it away from any
# PostgreSQL the machine already runs (Debian's "main" cluster takes 5432).
SL_PG_CLUSTER="${SESSION_LEARNING_PG_CLUSTER:-sltest}"
SL_PG_PORT="${SESSION_LEARNING_PG_PORT:-5439}"
SL_PG_USER="session_learning"
# A throwaway cluster that listens on localhost only, so a fixed password is good enough.
SL_PG_PASSWORD="${SESSION_LEARNING_PG_PASSWORD:-session_learning_test}"
SL_PG_TEST_DB="session_learning_test"
SL_PG_DAGSTER_DB="session_learning_dagster"
SL_PG_ENV_FILE="$SL_VAR/postgres.env"
# Redis is the Celery broker of the end-to-end test; another port keeps parallel runs apart.
SL_REDIS_PORT="${SESSION_LEARNING_REDIS_PORT:-6390}"
SL_REDIS_ENV_FILE="$SL_VAR/redis.env"

sl_say() { printf '==> %s\n' "$*" >&2; }
sl_note() { printf '    %s\n' "$*" >&2; }
sl_die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

sl_is_root() { [[ "$(id -u)" == 0 ]]; }

# CI=true must turn every "skip locally" into a failure: nothing may be silently skipped there.
sl_in_ci() {
    case "${CI:-}" in
        "" | 0 | false | False | FALSE | no) return 1 ;;
        *) return 0 ;;
    esac
}

# Run the lib.sh function "$@" in a child bash holding an exclusive lock on var/.<name>.lock, so
# two scripts started at once (tests in two shells) do not pip-install or initdb on top of each
# other. `flock -o` keeps the lock out of the child's descriptors: a PostgreSQL server started
# under it would otherwise hold the lock for as long as it runs. The child cannot export variables.
sl_with_lock() {
    local name="$1"
    shift
    mkdir -p "$SL_VAR"
    local run=(bash -c 'source "$1" && shift && "$@"' sl_with_lock "$SL_REPO/scripts/lib.sh" "$@")
    if command -v flock >/dev/null 2>&1; then
        flock -o "$SL_VAR/.$name.lock" "${run[@]}"
    else
        "${run[@]}"
    fi
}

# apt-get update at most once an hour (stamp in var/): a fresh machine has empty package lists,
# and updating for every package would cost minutes.
sl_apt_install() {
    command -v apt-get >/dev/null 2>&1 || sl_die "apt-get not found; install $* by hand"
    sl_is_root || sl_die "installing $* needs root"
    # Wait for a concurrent dpkg instead of failing on its lock.
    local apt=(apt-get -q -o DPkg::Lock::Timeout=600)
    local stamp="$SL_VAR/.apt-updated"
    mkdir -p "$SL_VAR"
    if [[ -z "$(find "$stamp" -mmin -60 2>/dev/null)" ]] ||
        ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
        sl_note "apt-get update"
        DEBIAN_FRONTEND=noninteractive "${apt[@]}" update >/dev/null ||
            sl_die "apt-get update failed"
        touch "$stamp"
    fi
    sl_note "apt-get install $*"
    # Output only on failure: the full log is noise when it works.
    local log
    log="$(mktemp)"
    if ! DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y --no-install-recommends "$@" \
        >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        sl_die "apt-get install $* failed"
    fi
    rm -f "$log"
}

# --- Python environment -------------------------------------------------------------------------

# The stack is pinned and tested on 3.11; a newer CPython is accepted, an older one is not.
sl_find_python() {
    local candidate
    for candidate in ${PYTHON:-} python3.11 python3 python3.12 python3.13; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

sl_venv_ok() {
    [[ -x "$SL_VENV/bin/python" ]] &&
        "$SL_VENV/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null &&
        "$SL_VENV/bin/python" -m pip --version >/dev/null 2>&1
}

sl_create_venv() {
    local python
    if ! python="$(sl_find_python)"; then
        # Debian 12's python3 is 3.11; a minimal image may not ship it at all.
        if sl_is_root && command -v apt-get >/dev/null 2>&1; then
            sl_apt_install python3 python3-venv
            python="$(sl_find_python)" || sl_die "no Python >= 3.11 found after installing python3"
        else
            sl_die "Python >= 3.11 is required (tried: ${PYTHON:-} python3.11 python3 python3.12" \
                "python3.13); set PYTHON=/path/to/python3.11"
        fi
    fi
    sl_note "creating .venv with $python ($("$python" -c 'import platform; print(platform.python_version())'))"
    rm -rf "$SL_VENV"
    if ! "$python" -m venv "$SL_VENV" >/dev/null 2>&1 || ! sl_venv_ok; then
        # Debian splits ensurepip into python3.X-venv; without it venv leaves a pip-less husk.
        rm -rf "$SL_VENV"
        if sl_is_root && command -v apt-get >/dev/null 2>&1; then
            local minor
            minor="$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
            sl_apt_install "python$minor-venv"
            "$python" -m venv "$SL_VENV" || sl_die "python -m venv failed"
        else
            "$python" -m venv "$SL_VENV" ||
                sl_die "python -m venv failed (on Debian/Ubuntu: apt-get install python3-venv)"
        fi
        sl_venv_ok || sl_die ".venv has no working pip"
    fi
}

# pip's output (warnings included) is shown only when it fails.
sl_pip() {
    local log rc=0
    log="$(mktemp)"
    "$SL_VENV/bin/python" -m pip --disable-pip-version-check --no-input -q "$@" >"$log" 2>&1 || rc=$?
    ((rc == 0)) || cat "$log" >&2
    rm -f "$log"
    return "$rc"
}

# Reinstall only when setup.py changed since the last install that succeeded; the stamp lives
# inside .venv so deleting .venv resets everything.
sl_bootstrap() {
    sl_with_lock bootstrap _sl_bootstrap || exit 1
}

_sl_bootstrap() {
    sl_say "bootstrap: Python environment in .venv"
    if ! sl_venv_ok; then
        sl_create_venv
    fi
    local stamp="$SL_VENV/.session_learning-setup.sha256" want
    want="$(sha256sum "$SL_REPO/setup.py")" || sl_die "cannot read setup.py"
    want="${want%% *}"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        sl_note "dependencies up to date (setup.py unchanged)"
        return 0
    fi
    sl_note "upgrading pip"
    sl_pip install --upgrade pip || sl_die "pip upgrade failed"
    sl_note "pip install -e .[dev] (with the celery extra; about a minute on a fresh machine)"
    rm -f "$stamp"
    (cd "$SL_REPO" && sl_pip install -e ".[dev]") || sl_die "pip install -e .[dev] failed"
    printf '%s\n' "$want" >"$stamp"
    sl_note "installed"
}

# --- Local Dagster instance ---------------------------------------------------------------------

# The repo-root dagster.yaml is the production (PostgreSQL) instance; local runs get the SQLite
# one unless the user already points DAGSTER_HOME somewhere.
sl_local_dagster_home() {
    if [[ -z "${DAGSTER_HOME:-}" ]]; then
        export DAGSTER_HOME="$SL_VAR/dagster_home"
        mkdir -p "$DAGSTER_HOME"
        if ! cmp -s "$SL_REPO/scripts/dagster.local.yaml" "$DAGSTER_HOME/dagster.yaml"; then
            cp "$SL_REPO/scripts/dagster.local.yaml" "$DAGSTER_HOME/dagster.yaml"
        fi
    else
        mkdir -p "$DAGSTER_HOME"
    fi
    sl_note "DAGSTER_HOME=$DAGSTER_HOME"
}

# --- Lint ---------------------------------------------------------------------------------------

sl_lint_paths() {
    local p
    # Empty directories are not tracked by git, so a fresh checkout may lack one of them.
    for p in session_learning tests bench; do
        [[ -e "$SL_REPO/$p" ]] && printf '%s\n' "$p"
    done
}

sl_lint() {
    local paths
    mapfile -t paths < <(sl_lint_paths)
    sl_say "lint: ruff check + ruff format --check (${paths[*]})"
    local rc=0
    (cd "$SL_REPO" && "$SL_VENV/bin/ruff" check --quiet "${paths[@]}") || rc=1
    (cd "$SL_REPO" && "$SL_VENV/bin/ruff" format --check --quiet "${paths[@]}") || {
        sl_note "formatting differs: run .venv/bin/ruff format ${paths[*]}"
        rc=1
    }
    return "$rc"
}

# --- PostgreSQL ---------------------------------------------------------------------------------

# Newest installed server major version, from Debian's /usr/lib/postgresql/<ver>/bin layout.
sl_pg_server_version() {
    local dir ver best=""
    for dir in /usr/lib/postgresql/*/bin/postgres; do
        [[ -x "$dir" ]] || continue
        ver="${dir#/usr/lib/postgresql/}"
        ver="${ver%%/*}"
        if [[ -z "$best" ]] || ((${ver%%.*} > ${best%%.*})); then
            best="$ver"
        fi
    done
    [[ -n "$best" ]] && printf '%s\n' "$best"
}

# Version of an existing cluster with our name, whatever major version created it.
sl_pg_existing_cluster_version() {
    command -v pg_lsclusters >/dev/null 2>&1 || return 1
    pg_lsclusters -h 2>/dev/null | awk -v c="$SL_PG_CLUSTER" '$2 == c { print $1; exit }' | grep .
}

sl_pg_cluster_status() { pg_lsclusters -h 2>/dev/null | awk -v c="$SL_PG_CLUSTER" -v v="$1" '$1 == v && $2 == c { print $4 }'; }

# Superuser psql on the test cluster (peer auth as the postgres OS user); SQL comes on stdin.
sl_pg_admin_psql() {
    (cd / && su postgres -s /bin/sh -c \
        "psql -X -q -v ON_ERROR_STOP=1 -p $SL_PG_PORT -d postgres") >/dev/null
}

# Connects as the application role over TCP, the way the tests do.
sl_pg_can_login() {
    local host="$1" port="$2" user="$3" password="$4" db="$5"
    if command -v psql >/dev/null 2>&1; then
        PGPASSWORD="$password" PGCONNECT_TIMEOUT=5 psql -X -q -h "$host" -p "$port" -U "$user" \
            -d "$db" -c 'select 1' >/dev/null 2>&1
    elif [[ -x "$SL_VENV/bin/python" ]]; then
        "$SL_VENV/bin/python" - "$host" "$port" "$user" "$password" "$db" <<'PY' >/dev/null 2>&1
import sys
import psycopg2
host, port, user, password, db = sys.argv[1:]
psycopg2.connect(host=host, port=port, user=user, password=password, dbname=db,
                 connect_timeout=5).close()
PY
    else
        return 1
    fi
}

# Checks a SQLAlchemy URL supplied by the user; the venv's SQLAlchemy parses every URL form.
sl_pg_url_ok() {
    local url="$1"
    if [[ -x "$SL_VENV/bin/python" ]] && "$SL_VENV/bin/python" -c 'import sqlalchemy' 2>/dev/null; then
        "$SL_VENV/bin/python" - "$url" <<'PY'
import sys, time
import sqlalchemy
url = sys.argv[1]
engine = sqlalchemy.create_engine(url, connect_args={"connect_timeout": 5})
for attempt in range(10):
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("select 1"))
        sys.exit(0)
    except Exception as exc:  # report the last error only
        err = exc
        time.sleep(1)
print(f"    cannot connect to {engine.url.render_as_string(hide_password=True)}: {err}",
      file=sys.stderr)
sys.exit(1)
PY
    elif command -v pg_isready >/dev/null 2>&1; then
        # Without the venv, fall back to a reachability check on host and port.
        local rest hostport host port
        rest="${url#*://}"
        rest="${rest#*@}"
        hostport="${rest%%/*}"
        host="${hostport%%:*}"
        port="${hostport##*:}"
        [[ "$port" == "$hostport" ]] && port=5432
        pg_isready -q -h "$host" -p "$port" -t 10
    else
        sl_note "cannot check $url (no .venv and no pg_isready); using it as given"
    fi
}

sl_pg_export() {
    export SESSION_LEARNING_TEST_POSTGRES_URL="postgresql+psycopg2://$SL_PG_USER:$SL_PG_PASSWORD@127.0.0.1:$SL_PG_PORT/$SL_PG_TEST_DB"
    export DAGSTER_PG_HOST=127.0.0.1
    export DAGSTER_PG_PORT="$SL_PG_PORT"
    export DAGSTER_PG_USERNAME="$SL_PG_USER"
    export DAGSTER_PG_PASSWORD="$SL_PG_PASSWORD"
    export DAGSTER_PG_DB="$SL_PG_DAGSTER_DB"
}

sl_pg_write_env_file() {
    mkdir -p "$SL_VAR"
    local name
    {
        echo "# Written by scripts/postgres; source it to reach the test PostgreSQL."
        for name in SESSION_LEARNING_TEST_POSTGRES_URL DAGSTER_PG_HOST DAGSTER_PG_PORT \
            DAGSTER_PG_USERNAME DAGSTER_PG_PASSWORD DAGSTER_PG_DB; do
            [[ -n "${!name:-}" ]] && printf 'export %s=%q\n' "$name" "${!name}"
        done
    } >"$SL_PG_ENV_FILE"
}

# Create (once), start and provision the private cluster. Needs root for apt, pg_createcluster
# and the postgres superuser.
sl_pg_provision_cluster() {
    local ver
    if ! ver="$(sl_pg_existing_cluster_version)"; then
        if [[ -z "$(sl_pg_server_version)" ]] || ! command -v pg_createcluster >/dev/null 2>&1; then
            sl_note "PostgreSQL server not installed"
            sl_apt_install postgresql
        fi
        ver="$(sl_pg_server_version)" || sl_die "no PostgreSQL server under /usr/lib/postgresql"
        sl_note "creating cluster $ver/$SL_PG_CLUSTER on port $SL_PG_PORT"
        # C.UTF-8 always exists on Debian; inheriting a bare container's POSIX locale would give
        # SQL_ASCII databases.
        pg_createcluster --locale=C.UTF-8 -p "$SL_PG_PORT" "$ver" "$SL_PG_CLUSTER" >/dev/null ||
            sl_die "pg_createcluster $ver $SL_PG_CLUSTER failed"
    fi
    local conf_port
    conf_port="$(pg_lsclusters -h | awk -v c="$SL_PG_CLUSTER" -v v="$ver" '$1 == v && $2 == c { print $3 }')"
    [[ "$conf_port" == "$SL_PG_PORT" ]] ||
        sl_die "cluster $ver/$SL_PG_CLUSTER listens on $conf_port, expected $SL_PG_PORT"
    if [[ "$(sl_pg_cluster_status "$ver")" != online* ]]; then
        sl_note "starting cluster $ver/$SL_PG_CLUSTER"
        pg_ctlcluster "$ver" "$SL_PG_CLUSTER" start ||
            sl_die "pg_ctlcluster $ver $SL_PG_CLUSTER start failed; see /var/log/postgresql/postgresql-$ver-$SL_PG_CLUSTER.log"
    fi
    local i
    for ((i = 0; i < 60; i++)); do
        pg_isready -q -h 127.0.0.1 -p "$SL_PG_PORT" && break
        sleep 1
    done
    pg_isready -q -h 127.0.0.1 -p "$SL_PG_PORT" ||
        sl_die "PostgreSQL on 127.0.0.1:$SL_PG_PORT not ready after 60 s"
    # Idempotent: the role's password is reset each time so a changed SESSION_LEARNING_PG_PASSWORD
    # takes effect; databases are created only when missing.
    sl_pg_admin_psql <<SQL || sl_die "could not create role/databases"
DO \$\$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$SL_PG_USER') THEN
        CREATE ROLE $SL_PG_USER LOGIN PASSWORD '$SL_PG_PASSWORD';
    ELSE
        ALTER ROLE $SL_PG_USER LOGIN PASSWORD '$SL_PG_PASSWORD';
    END IF;
END
\$\$;
SELECT 'CREATE DATABASE $SL_PG_TEST_DB OWNER $SL_PG_USER'
    WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$SL_PG_TEST_DB') \gexec
SELECT 'CREATE DATABASE $SL_PG_DAGSTER_DB OWNER $SL_PG_USER'
    WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$SL_PG_DAGSTER_DB') \gexec
SQL
}

# Make a test PostgreSQL available and export its URL plus DAGSTER_PG_* into this shell.
# Returns 0 when exported, 1 when none is available (fine locally; callers fail in CI).
sl_postgres() {
    sl_say "postgres: test database"
    if [[ -n "${SESSION_LEARNING_TEST_POSTGRES_URL:-}" ]]; then
        sl_note "using SESSION_LEARNING_TEST_POSTGRES_URL from the environment"
        sl_pg_url_ok "$SESSION_LEARNING_TEST_POSTGRES_URL" ||
            sl_die "SESSION_LEARNING_TEST_POSTGRES_URL is set but not reachable"
        if [[ -z "${DAGSTER_PG_HOST:-}" ]]; then
            sl_note "DAGSTER_PG_* not set: Dagster-on-PostgreSQL tests need them alongside the URL"
        fi
        sl_pg_write_env_file
        return 0
    fi
    [[ "$SL_PG_PASSWORD" =~ ^[A-Za-z0-9_.-]+$ ]] ||
        sl_die "SESSION_LEARNING_PG_PASSWORD may only hold letters, digits and _.- (it goes into SQL and a URL)"
    if sl_is_root; then
        sl_with_lock postgres sl_pg_provision_cluster || exit 1
    fi
    if sl_pg_can_login 127.0.0.1 "$SL_PG_PORT" "$SL_PG_USER" "$SL_PG_PASSWORD" "$SL_PG_TEST_DB" &&
        sl_pg_can_login 127.0.0.1 "$SL_PG_PORT" "$SL_PG_USER" "$SL_PG_PASSWORD" "$SL_PG_DAGSTER_DB"; then
        sl_pg_export
        sl_pg_write_env_file
        sl_note "ready: postgresql+psycopg2://$SL_PG_USER:***@127.0.0.1:$SL_PG_PORT/{$SL_PG_TEST_DB,$SL_PG_DAGSTER_DB}"
        return 0
    fi
    if sl_is_root; then
        sl_die "cluster on port $SL_PG_PORT is up but login as $SL_PG_USER failed"
    fi
    rm -f "$SL_PG_ENV_FILE"
    if sl_in_ci; then
        sl_die "no PostgreSQL on 127.0.0.1:$SL_PG_PORT and not root: CI must run the PostgreSQL tests"
    fi
    sl_note "NOTE: no PostgreSQL available and not root: the PostgreSQL tests will be skipped."
    sl_note "      Run ./scripts/test as root once, or set SESSION_LEARNING_TEST_POSTGRES_URL."
    return 1
}

# --- Redis ------------------------------------------------------------------------------------

sl_redis_ping() { redis-cli -h 127.0.0.1 -p "$SL_REDIS_PORT" ping 2>/dev/null | grep -qx PONG; }

# Install Debian's redis-server when missing and start one on 127.0.0.1:$SL_REDIS_PORT that keeps
# nothing on disk (--save ''): the broker of the Celery test. Needs root to install.
sl_redis_start() {
    if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
        sl_note "redis-server not installed"
        sl_apt_install redis-server
    fi
    sl_redis_ping && return 0
    sl_note "starting redis-server on 127.0.0.1:$SL_REDIS_PORT"
    mkdir -p "$SL_VAR"
    (cd "$SL_VAR" && redis-server --port "$SL_REDIS_PORT" --bind 127.0.0.1 --daemonize yes \
        --save '' --appendonly no --logfile "$SL_VAR/redis-$SL_REDIS_PORT.log") >/dev/null ||
        sl_die "redis-server --port $SL_REDIS_PORT failed; see $SL_VAR/redis-$SL_REDIS_PORT.log"
    local i
    for ((i = 0; i < 30; i++)); do
        sl_redis_ping && return 0
        sleep 1
    done
    sl_die "Redis on 127.0.0.1:$SL_REDIS_PORT not answering after 30 s"
}

# Make a Redis available for the Celery test and export SESSION_LEARNING_TEST_REDIS_URL.
# Returns 0 when exported, 1 when none is available (fine locally; fails in CI).
sl_redis() {
    sl_say "redis: Celery broker for the end-to-end test"
    if [[ -n "${SESSION_LEARNING_TEST_REDIS_URL:-}" ]]; then
        sl_note "using SESSION_LEARNING_TEST_REDIS_URL from the environment"
        return 0
    fi
    if sl_is_root; then
        sl_with_lock redis sl_redis_start || exit 1
    fi
    if command -v redis-cli >/dev/null 2>&1 && sl_redis_ping; then
        export SESSION_LEARNING_TEST_REDIS_URL="redis://127.0.0.1:$SL_REDIS_PORT"
        mkdir -p "$SL_VAR"
        printf '# Written by scripts/test; source it to reach the test Redis.\nexport %s=%q\n' \
            SESSION_LEARNING_TEST_REDIS_URL "$SESSION_LEARNING_TEST_REDIS_URL" >"$SL_REDIS_ENV_FILE"
        sl_note "ready: $SESSION_LEARNING_TEST_REDIS_URL"
        return 0
    fi
    rm -f "$SL_REDIS_ENV_FILE"
    if sl_in_ci; then
        sl_die "no Redis on 127.0.0.1:$SL_REDIS_PORT and not root: CI must run the Celery test"
    fi
    sl_note "NOTE: no Redis available and not root: the Celery test will be skipped."
    sl_note "      Run ./scripts/test as root once, or set SESSION_LEARNING_TEST_REDIS_URL."
    return 1
}

# --- Chromium -----------------------------------------------------------------------------------

# Browser tests drive Debian's chromium through Playwright; `playwright install` downloads its own
# browser from a CDN, which is not reachable from CI.
sl_chromium() {
    [[ -x /usr/bin/chromium ]] && return 0
    if sl_is_root && command -v apt-get >/dev/null 2>&1; then
        sl_say "chromium: installing Debian's chromium for the browser tests"
        sl_apt_install chromium
    elif sl_in_ci; then
        sl_die "/usr/bin/chromium missing and not root: CI must run the browser tests"
    else
        sl_note "NOTE: /usr/bin/chromium missing and not root: browser tests will be skipped."
    fi
}
