# Start/stop the platform's services without systemd. Idempotent. Sourced by ./drc.

PGBIN=/usr/lib/postgresql/15/bin
pg_psql() { runuser -u postgres -- "$PGBIN/psql" -h /tmp -p "$DRC_PG_PORT" -v ON_ERROR_STOP=1 -qAt "$@"; }
maria()   { mariadb --socket="$MARIADB_SOCKET" -u root "$@"; }
MARIADB_SOCKET_FOR() { echo "/tmp/drc-mariadb-$1.sock"; }

# The web services users open (Airflow, Superset, the lookup API, dbt docs) listen on DRC_WEB_BIND (default
# 127.0.0.1; set it in .env, e.g. to the intranet address, to serve other machines). Databases, the SFTP receiver
# and the simulated vendor API stay on 127.0.0.1.
web_host() { [[ "$DRC_WEB_BIND" == 0.0.0.0 ]] && echo 127.0.0.1 || echo "$DRC_WEB_BIND"; }

wait_for() {  # wait_for <what> <seconds> <command...>
  local what=$1 secs=$2; shift 2
  for ((i = 0; i < secs * 2; i++)); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
  die "$what did not come up within ${secs}s; see $DRC_LOG_DIR"
}

# The platform's state (lake, archive, inbox, quarantine, logs, service data) is for the platform's own users only:
# root, which runs the pipeline and the web services, and, through the group xydrc, the databases' service users.
# Any other local user can neither list nor read anything under it, whatever the modes inside.
restrict_state() {
  getent group xydrc >/dev/null || groupadd --system xydrc
  local user
  for user in postgres mysql; do
    if id -u "$user" >/dev/null 2>&1 && ! id -nG "$user" | grep -qw xydrc; then usermod -a -G xydrc "$user"; fi
  done
  chgrp xydrc "$DRC_STATE_DIR" && chmod 750 "$DRC_STATE_DIR"
}

start_postgres() {
  local data="$DRC_STATE_DIR/pg"
  restrict_state
  if [[ ! -f "$data/PG_VERSION" ]]; then
    log "initialising PostgreSQL 15 cluster in $data (port $DRC_PG_PORT)"
    mkdir -p "$data"; chown postgres:postgres "$data"; chmod 700 "$data"
    runuser -u postgres -- "$PGBIN/initdb" -D "$data" -U postgres -E UTF8 --locale=C.UTF-8 \
      --auth-local=peer --auth-host=scram-sha-256 >"$DRC_LOG_DIR/initdb.log"
    cat >>"$data/postgresql.conf" <<CONF
# --- data resource center settings ---
listen_addresses = '127.0.0.1'
unix_socket_directories = '/tmp'
wal_level = logical
max_replication_slots = 10
max_wal_senders = 10
shared_buffers = 512MB
max_connections = 200
# bulk days (simulator, publish) write GBs of WAL: fewer checkpoints, fewer full-page images
max_wal_size = 4GB
checkpoint_timeout = 15min
CONF
    echo "host replication all 127.0.0.1/32 scram-sha-256" >>"$data/pg_hba.conf"
  fi
  sed -i "s/^port = .*/port = $DRC_PG_PORT/; t; \$a port = $DRC_PG_PORT" "$data/postgresql.conf"
  if ! "$PGBIN/pg_isready" -q -h /tmp -p "$DRC_PG_PORT"; then
    log "starting PostgreSQL on port $DRC_PG_PORT"
    touch "$DRC_LOG_DIR/postgres.log"; chown postgres "$DRC_LOG_DIR/postgres.log"
    runuser -u postgres -- "$PGBIN/pg_ctl" -D "$data" -l "$DRC_LOG_DIR/postgres.log" -w start >/dev/null
  fi
  local role db pw
  for spec in "drc:warehouse:$DRC_PG_PASSWORD" "airflow:airflow:$DRC_AIRFLOW_DB_PASSWORD" \
              "superset:superset:$DRC_SUPERSET_DB_PASSWORD"; do
    IFS=: read -r role db pw <<<"$spec"
    pg_psql -c "DO \$\$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname='$role') THEN
                CREATE ROLE $role LOGIN; END IF; END\$\$;" >/dev/null
    pg_psql >/dev/null <<<"ALTER ROLE $role WITH LOGIN PASSWORD '$pw'"  # on stdin: no password in ps
    [[ "$(pg_psql -c "SELECT 1 FROM pg_database WHERE datname='$db'")" == 1 ]] ||
      pg_psql -c "CREATE DATABASE $db OWNER $role" >/dev/null
  done
  pg_psql -c "ALTER ROLE drc WITH REPLICATION" >/dev/null
  # drc_bi: what Superset reads the warehouse as; drc_audit: the auditor's reader. Each may select only the
  # columns config/access/classification.yaml lets it see (core/classification.py grants them): no 身份证号,
  # name, phone or address for drc_bi, so no dashboard or SQL can reach them.
  for spec in "drc_bi:$DRC_BI_DB_PASSWORD" "drc_audit:$DRC_AUDIT_DB_PASSWORD"; do
    IFS=: read -r role pw <<<"$spec"
    pg_psql -c "DO \$\$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname='$role') THEN
                CREATE ROLE $role LOGIN; END IF; END\$\$;" >/dev/null
    pg_psql >/dev/null <<<"ALTER ROLE $role WITH LOGIN PASSWORD '$pw'"  # on stdin: no password in ps
  done
  # drc_api: what the clinical lookup API reads as. dbt grants it the marts it serves; api/audit.py's set-up lets
  # it insert (never update or delete) audit rows. pgcrypto: the keyed hash behind ID-number lookups.
  pg_psql -c "DO \$\$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname='drc_api') THEN
              CREATE ROLE drc_api LOGIN; END IF; END\$\$;" >/dev/null
  pg_psql >/dev/null <<<"ALTER ROLE drc_api WITH LOGIN PASSWORD '$DRC_API_DB_PASSWORD'"  # on stdin: no password in ps
  pg_psql -d warehouse -c "SET client_min_messages = warning; CREATE EXTENSION IF NOT EXISTS pgcrypto" >/dev/null
  # No JIT in the warehouse: compiling the indicator measures' ≈ 2,000 expressions took 27 s of a 27.2 s query
  # (whatever the data size), and a dashboard's query pays the compile before its first row.
  pg_psql -c "ALTER DATABASE warehouse SET jit = off" >/dev/null
  # The simulated member systems on PostgreSQL (each its own database) and the simulator's answer key.
  pg_psql -c "DO \$\$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname='his') THEN
              CREATE ROLE his LOGIN CREATEDB REPLICATION; END IF; END\$\$;" >/dev/null
  pg_psql >/dev/null <<<"ALTER ROLE his WITH LOGIN PASSWORD '$DRC_HIS_DB_PASSWORD'"  # on stdin: no password in ps
  for db in zyy_his cloud_his public_health private_his sim_truth; do
    [[ "$(pg_psql -c "SELECT 1 FROM pg_database WHERE datname='$db'")" == 1 ]] ||
      pg_psql -c "CREATE DATABASE $db OWNER his" >/dev/null
  done
}

start_mariadb() {
  restrict_state
  local data="$DRC_STATE_DIR/mariadb" cnf="$DRC_STATE_DIR/mariadb.cnf"
  MARIADB_SOCKET=$(MARIADB_SOCKET_FOR "$DRC_MARIADB_PORT")
  cat >"$cnf" <<CONF
[mariadbd]
datadir = $data
port = $DRC_MARIADB_PORT
bind-address = 127.0.0.1
socket = $MARIADB_SOCKET
pid-file = $DRC_RUN_DIR/mariadb.pid
log-error = $DRC_LOG_DIR/mariadb.log
character-set-server = utf8mb4
collation-server = utf8mb4_general_ci
# row binlog with full metadata: the source for log-based CDC
server_id = 1
log_bin = $data/binlog
binlog_format = ROW
binlog_row_image = FULL
binlog_row_metadata = FULL
innodb_buffer_pool_size = 512M
CONF
  if [[ ! -d "$data/mysql" ]]; then
    log "initialising MariaDB in $data (port $DRC_MARIADB_PORT)"
    mkdir -p "$data"; chown -R mysql:mysql "$data"
    mariadb-install-db --defaults-file="$cnf" --user=mysql --auth-root-authentication-method=socket \
      >"$DRC_LOG_DIR/mariadb-install.log" 2>&1
  fi
  chown mysql:mysql "$DRC_RUN_DIR"; touch "$DRC_LOG_DIR/mariadb.log"; chown mysql:mysql "$DRC_LOG_DIR/mariadb.log"
  if ! mariadb-admin --socket="$MARIADB_SOCKET" ping >/dev/null 2>&1; then
    log "starting MariaDB on port $DRC_MARIADB_PORT"
    start-stop-daemon --start --oknodo --background --pidfile "$DRC_RUN_DIR/mariadb.pid" \
      --exec /usr/sbin/mariadbd -- --defaults-file="$cnf" --user=mysql
    wait_for MariaDB 60 mariadb-admin --socket="$MARIADB_SOCKET" ping
  fi
  maria <<SQL  # on stdin: no password in ps
CREATE USER IF NOT EXISTS 'his'@'127.0.0.1' IDENTIFIED BY '$DRC_HIS_DB_PASSWORD';
ALTER USER 'his'@'127.0.0.1' IDENTIFIED BY '$DRC_HIS_DB_PASSWORD';
GRANT ALL ON *.* TO 'his'@'127.0.0.1' WITH GRANT OPTION;
-- binlog CDC (mode mysql_binlog): read the row binlog and its position; explicit so a narrower grant keeps them
GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO 'his'@'127.0.0.1';
SQL
}

# The platform's own collection account for each database source in config/sources (as a hospital's DBA grants
# it): log in, read, and replication only for the log-based modes. Read access to the source's schema is granted
# by its owner when the schema is created (simulator.connections.grant_collector); on MariaDB, here. Passwords
# go through stdin, never a command line.
collection_accounts() {  # kind mode user password_env database, one line per local database source
  "$(lake_py)" - <<'PY'
from ingestion.registry import load_sources

for source in load_sources().values():
    conn = source.connection
    if conn.kind in ("postgresql", "mariadb", "mysql") and conn.password_env and not conn.host:
        print(conn.kind, source.mode, conn.user, conn.password_env, conn.database)
PY
}

grant_collection_accounts() {
  local kind mode user pwvar db replication accounts
  accounts=$(collection_accounts) || die "cannot read the collection accounts from config/sources"
  while read -r kind mode user pwvar db; do
    [[ -n "${!pwvar:-}" ]] || die "$pwvar (password of $user) is not in .env: run ./drc setup"
    case $mode in pg_logical|mysql_binlog) replication=1 ;; *) replication=0 ;; esac
    if [[ $kind == postgresql ]]; then
      pg_psql >/dev/null <<SQL
DO \$\$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$user') THEN CREATE ROLE "$user"; END IF; END\$\$;
ALTER ROLE "$user" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE $( ((replication)) && echo REPLICATION || echo NOREPLICATION) PASSWORD '${!pwvar}';
GRANT CONNECT ON DATABASE "$db" TO "$user";
SQL
    else
      maria <<SQL
CREATE USER IF NOT EXISTS '$user'@'127.0.0.1' IDENTIFIED BY '${!pwvar}';
ALTER USER '$user'@'127.0.0.1' IDENTIFIED BY '${!pwvar}';
GRANT SELECT ON \`$db\`.* TO '$user'@'127.0.0.1';
$( ((replication)) && echo "GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO '$user'@'127.0.0.1';")
SQL
    fi
  done <<<"$accounts"
}

# Long-running processes: name, log file, pid file, command.
spawn() {
  local name=$1; shift
  local pidfile="$DRC_RUN_DIR/$name.pid"
  if [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then return 0; fi
  log "starting $name"
  setsid nohup "$@" >>"$DRC_LOG_DIR/$name.log" 2>&1 < /dev/null &
  echo $! >"$pidfile"
}

stop_spawned() {
  local pidfile name
  for pidfile in "$DRC_RUN_DIR"/*.pid; do
    [[ -e "$pidfile" ]] || continue
    name=$(basename "$pidfile" .pid)
    [[ "$name" == mariadb ]] && continue
    if kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      log "stopping $name"; kill -- -"$(cat "$pidfile")" 2>/dev/null || kill "$(cat "$pidfile")" || true
    fi
    rm -f "$pidfile"
  done
}

migrate_airflow() {
  local marker; marker="$AIRFLOW_HOME/.migrated-$(basename "$(venv_dir airflow)")"
  mkdir -p "$AIRFLOW_HOME"
  printf '{"admin": "%s"}' "$DRC_AIRFLOW_ADMIN_PASSWORD" >"$AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"
  [[ -f "$marker" ]] && return 0
  log "migrating the Airflow metadata database"
  "$(airflow_bin)" db migrate >"$DRC_LOG_DIR/airflow-migrate.log" 2>&1 || die "airflow db migrate failed: see $DRC_LOG_DIR/airflow-migrate.log"
  touch "$marker"
}

set_airflow_pools() {  # the pools of config/pipeline.yaml (2 cores: one Spark-heavy step at a time); when changed
  local file="$AIRFLOW_HOME/pools.json" wanted
  wanted=$(PYTHONPATH="$DRC_ROOT" "$(venv_dir airflow)/bin/python" -c 'import json; from core.pipeline import load_pipeline
print(json.dumps({n: {"slots": s, "description": d, "include_deferred": False}
                  for n, (s, d) in load_pipeline().pools.items()}, ensure_ascii=False))') || die "config/pipeline.yaml: unreadable pools"
  [[ -f "$file" && "$(cat "$file")" == "$wanted" ]] && return 0
  printf '%s' "$wanted" >"$file.new"
  "$(airflow_bin)" pools import "$file.new" >>"$DRC_LOG_DIR/airflow-migrate.log" 2>&1 ||
    die "airflow pools import failed: see $DRC_LOG_DIR/airflow-migrate.log"
  mv "$file.new" "$file"
}

start_airflow() {
  migrate_airflow
  set_airflow_pools
  spawn airflow-api-server "$(airflow_bin)" api-server --host "$DRC_WEB_BIND" --port "$DRC_AIRFLOW_PORT"
  spawn airflow-scheduler "$(airflow_bin)" scheduler
  spawn airflow-dag-processor "$(airflow_bin)" dag-processor
  wait_for "Airflow API server" 120 curl -sf "http://$(web_host):$DRC_AIRFLOW_PORT/api/v2/monitor/health"
}

migrate_superset() {
  local marker; marker="$SUPERSET_HOME/.migrated-$(basename "$(venv_dir superset)")"
  mkdir -p "$SUPERSET_HOME"
  [[ -f "$marker" ]] && return 0
  log "migrating the Superset metadata database"
  {
    "$(superset_bin)" db upgrade &&
    "$(superset_bin)" init &&
    "$(venv_dir superset)/bin/python" "$DRC_ROOT/superset/admin.py"  # the password stays in the environment
  } >"$DRC_LOG_DIR/superset-migrate.log" 2>&1 || die "Superset set-up failed: see $DRC_LOG_DIR/superset-migrate.log"
  touch "$marker"
}

start_superset() {
  migrate_superset
  spawn superset "$(venv_dir superset)/bin/gunicorn" -w 2 -k gthread --threads 4 --timeout 120 \
    -b "$DRC_WEB_BIND:$DRC_SUPERSET_PORT" "superset.app:create_app()"
  wait_for Superset 120 curl -sf "http://$(web_host):$DRC_SUPERSET_PORT/health"
}

start_api() {
  "$(lake_py)" -m cli.main api-setup >"$DRC_LOG_DIR/api-setup.log" 2>&1 ||
    die "API set-up failed: see $DRC_LOG_DIR/api-setup.log"
  spawn api "$(lake_py)" -m uvicorn api.main:app --host "$DRC_WEB_BIND" --port "$DRC_API_PORT" --workers 2 \
    --no-access-log
  wait_for "the lookup API" 60 curl -sf "http://$(web_host):$DRC_API_PORT/health"
}

# The receiving side of the exports: the municipal platform's SFTP server, played by Debian's sshd on a loopback
# port. One account (upstream) that can only SFTP into its chroot's inbox/, key login only, host key pinned by the
# exporter (known_hosts). Keys are generated once into $DRC_STATE_DIR/sftp; what the server holds is under
# $DRC_SFTP_ROOT/chroot/inbox.
start_sftp() {
  local dir="$DRC_STATE_DIR/sftp" cnf="$DRC_STATE_DIR/sftp/sshd_config"
  mkdir -p -m 700 "$dir"; mkdir -p -m 755 /run/sshd
  id upstream >/dev/null 2>&1 || useradd --system --no-create-home --home-dir /inbox --shell /usr/sbin/nologin upstream
  usermod -p '*' upstream   # no password, yet not "locked" ('!'), which sshd without PAM refuses even for keys
  [[ -f "$dir/ssh_host_ed25519_key" ]] || ssh-keygen -q -t ed25519 -N '' -C "xydrc sftp host" -f "$dir/ssh_host_ed25519_key"
  [[ -f "$dir/client_ed25519" ]] || ssh-keygen -q -t ed25519 -N '' -C "xydrc exporter" -f "$dir/client_ed25519"
  install -d -o root -g root -m 755 "$DRC_SFTP_ROOT" "$DRC_SFTP_ROOT/keys" "$DRC_SFTP_ROOT/chroot"
  install -d -o upstream -g upstream -m 755 "$DRC_SFTP_ROOT/chroot/inbox"
  install -o root -g root -m 644 "$dir/client_ed25519.pub" "$DRC_SFTP_ROOT/keys/upstream"
  echo "[127.0.0.1]:$DRC_SFTP_PORT $(cut -d' ' -f1-2 "$dir/ssh_host_ed25519_key.pub")" >"$dir/known_hosts"
  cat >"$cnf" <<CONF
# Generated by scripts/services.sh start_sftp; edits are overwritten.
ListenAddress 127.0.0.1
Port $DRC_SFTP_PORT
HostKey $dir/ssh_host_ed25519_key
PidFile none
UsePAM no
PermitRootLogin no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
AuthorizedKeysFile $DRC_SFTP_ROOT/keys/%u
AllowUsers upstream
AllowTcpForwarding no
X11Forwarding no
PermitTunnel no
Subsystem sftp internal-sftp
Match User upstream
  ChrootDirectory $DRC_SFTP_ROOT/chroot
  ForceCommand internal-sftp -d /inbox
CONF
  /usr/sbin/sshd -t -f "$cnf" 2>"$DRC_LOG_DIR/sftp-config.log" ||
    die "the SFTP server's configuration is invalid: see $DRC_LOG_DIR/sftp-config.log"
  spawn sftp /usr/sbin/sshd -D -e -f "$cnf"
  wait_for "the SFTP server" 30 bash -c "exec 3<>/dev/tcp/127.0.0.1/$DRC_SFTP_PORT"
}

start_sim_api() {
  spawn sim-api "$(lake_py)" -m uvicorn simulator.api_server:app --host 127.0.0.1 --port "$DRC_SIM_API_PORT"
  wait_for "the simulated private-hospital API" 60 curl -sf "http://127.0.0.1:$DRC_SIM_API_PORT/health"
}

# The engineers' dbt documentation (models, columns, tests, lineage): the static site `dbt docs generate` writes
# at the end of every `./drc transform`, served read-only.
start_dbt_docs() {
  mkdir -p "$DRC_ROOT/dbt/target"
  spawn dbt-docs "$(lake_py)" -m http.server "$DRC_DBT_DOCS_PORT" --bind "$DRC_WEB_BIND" --directory "$DRC_ROOT/dbt/target"
  wait_for "the dbt docs site" 30 curl -sf -o /dev/null "http://$(web_host):$DRC_DBT_DOCS_PORT/"
}

start_databases() { start_postgres; start_mariadb; grant_collection_accounts; }

stop_all() {
  stop_spawned
  MARIADB_SOCKET=$(MARIADB_SOCKET_FOR "$DRC_MARIADB_PORT")
  if mariadb-admin --socket="$MARIADB_SOCKET" ping >/dev/null 2>&1; then
    log "stopping MariaDB"; mariadb-admin --socket="$MARIADB_SOCKET" shutdown
  fi
  if [[ -f "$DRC_STATE_DIR/pg/PG_VERSION" ]] && "$PGBIN/pg_isready" -q -h /tmp -p "$DRC_PG_PORT"; then
    log "stopping PostgreSQL"; runuser -u postgres -- "$PGBIN/pg_ctl" -D "$DRC_STATE_DIR/pg" -m fast -w stop >/dev/null
  fi
}
