# Install what is missing: Debian packages, three virtualenvs, Spark jars. Idempotent. Sourced by ./drc.

APT_PACKAGES=(postgresql-15 postgresql-contrib postgresql-15-wal2json mariadb-server mariadb-client chromium chromium-driver fonts-wqy-microhei)

install_apt() {
  local missing=() p
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  log "installing Debian packages: ${missing[*]}"
  # Keep package scripts from starting default services: we run our own instances.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

install_venv() {
  local name=$1 dir tmp
  dir=$(venv_dir "$name")
  [[ -x "$dir/bin/python" ]] && return 0
  log "creating the $name virtualenv (first run only, ~2 min)"
  tmp="$dir.partial"; rm -rf "$tmp"; mkdir -p "$VENV_ROOT"
  python3.11 -m venv "$tmp"
  "$tmp/bin/pip" install -q --upgrade pip >/dev/null
  "$tmp/bin/pip" install -q -r "requirements/$name.lock"
  # venvs hard-code their path: recreate the activation paths by moving atomically, then fix shebangs.
  mv "$tmp" "$dir"
  grep -rlI --exclude-dir=__pycache__ "$tmp" "$dir/bin" | xargs -r sed -i "s#$tmp#$dir#g"
}

install_jars() {
  if [[ -f .jars/.complete ]] && [[ "$(cat .jars/.complete)" == "$(sha256sum spark_jobs/pom.xml | cut -c1-16)" ]]; then
    return 0
  fi
  log "fetching Delta and JDBC jars with Maven into .jars/"
  rm -rf .jars
  mvn -q -f spark_jobs/pom.xml dependency:copy-dependencies \
      -DoutputDirectory="$DRC_ROOT/.jars" -DexcludeTransitive=true
  sha256sum spark_jobs/pom.xml | cut -c1-16 > .jars/.complete
}

install_all() {
  install_apt
  install_venv lake
  install_venv airflow
  install_venv superset
  install_jars
}
