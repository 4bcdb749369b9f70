# Install what is missing: Debian packages, three virtualenvs, Spark jars. Idempotent. Sourced by ./drc.

APT_PACKAGES=(postgresql-15 postgresql-contrib postgresql-15-wal2json mariadb-server mariadb-client chromium chromium-driver fonts-wqy-microhei wrk
              openssh-server)

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

# The API's /docs and /redoc pages: Swagger UI and ReDoc served by the API itself (a county intranet cannot reach
# a public CDN). Fetched once from the npm registry, pinned and checked against the registry's sha512.
API_ASSETS=(
  "swagger-ui-dist 5.35.0 U06rpMtW9V3XPGOBeamTUSr0Z09jMX4IJuANpE/EZbAhw0G8CgwrzU4YmXkn/h0wCDNsXdGarTNNHC3sU8yVUQ== swagger-ui-bundle.js swagger-ui.css favicon-32x32.png"
  "redoc 2.5.4 M6jWhG1qoBnH6TFmzJnstyCZ87HmOY/UzDm78mHiYihEdlV/YcS9ogOo1NlElnJMeLsyxHFe2yFc4sNjHTrABQ== bundles/redoc.standalone.js"
)
install_api_assets() {
  local spec name version integrity files tgz f
  mkdir -p "$DRC_API_ASSETS_DIR"
  for spec in "${API_ASSETS[@]}"; do
    read -r name version integrity files <<<"$spec"
    [[ -f "$DRC_API_ASSETS_DIR/.$name-$version" ]] && continue
    log "fetching $name $version (API docs pages) from the npm registry"
    tgz=$(mktemp)
    curl -sfL --retry 3 -o "$tgz" "https://registry.npmjs.org/$name/-/$(basename "$name")-$version.tgz" ||
      die "could not download $name $version from registry.npmjs.org"
    [[ "$(openssl dgst -sha512 -binary "$tgz" | base64 -w0)" == "$integrity" ]] ||
      die "$name $version: checksum mismatch (expected the registry's sha512-$integrity)"
    for f in $files; do tar -xzf "$tgz" -O "package/$f" >"$DRC_API_ASSETS_DIR/$(basename "$f")"; done
    rm -f "$tgz"; touch "$DRC_API_ASSETS_DIR/.$name-$version"
  done
}

install_all() {
  install_apt
  install_venv lake
  install_venv airflow
  install_venv superset
  install_jars
  install_api_assets
}
