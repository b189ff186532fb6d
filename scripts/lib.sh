# Shared by scripts/serve and scripts/test: check what the build and the tests need, and
# install it from Debian's packages when we can (root with apt-get); otherwise say exactly
# what is missing and how to get it.

ensure_command() { # ensure_command <command> <debian package> <why>
  local command=$1 package=$2 why=$3
  command -v "$command" >/dev/null 2>&1 && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing $package ($why)" >&2
    if [ -z "${WASMKUBE_APT_UPDATED:-}" ]; then
      apt-get update -qq >&2 || true
      export WASMKUBE_APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >&2 || true
  fi
  if ! command -v "$command" >/dev/null 2>&1; then
    echo "error: '$command' is missing; it is needed for $why." >&2
    echo "       Install the Debian package '$package' (sudo apt-get install $package) and run this again." >&2
    exit 1
  fi
}

ensure_build_tools() {
  command -v cargo >/dev/null 2>&1 || {
    echo "error: cargo is missing; install Rust with rustup (https://rustup.rs). rust-toolchain.toml pins the version and the wasm32-wasip2 target." >&2
    exit 1
  }
  ensure_command protoc protobuf-compiler "building etcd-client (it compiles etcd's .proto files)"
  # Install the toolchain and the targets rust-toolchain.toml lists (wasm32-wasip2 for the
  # plugins); plain cargo would install a missing toolchain but not a missing target.
  if command -v rustup >/dev/null 2>&1; then
    rustup toolchain install >/dev/null 2>&1 || {
      echo "error: rustup could not install the toolchain and targets in rust-toolchain.toml;" >&2
      echo "       run 'rustup toolchain install' in $(pwd) to see why." >&2
      exit 1
    }
  fi
}

# ensure_python_packages: a venv with tests/python/requirements.txt installed, for the tests
# that drive the server with real Python clients. The venv lives outside the work tree
# (${WASMKUBE_PYTHON_VENV:-$HOME/.cache/wasmkube/python-venv}) and is reused; pip runs only
# when the requirements file differs from the copy kept in the venv after the last install.
# Exports WASMKUBE_PYTHON=<venv>/bin/python.
ensure_python_packages() {
  local root requirements venv stamp log
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  requirements=$root/tests/python/requirements.txt
  venv=${WASMKUBE_PYTHON_VENV:-$HOME/.cache/wasmkube/python-venv}
  stamp=$venv/wasmkube-requirements.txt
  [ -f "$requirements" ] || {
    echo "error: $requirements is missing (ensure_python_packages installs what it lists)." >&2
    exit 1
  }
  ensure_command python3 python3 "the Python client tests (tests/python)"

  mkdir -p "$(dirname "$venv")" || {
    echo "error: cannot create $(dirname "$venv") for the Python venv; set WASMKUBE_PYTHON_VENV to a writable path." >&2
    exit 1
  }
  # Several test processes may call this at once: one installs, the others wait for it.
  local lock_fd
  if command -v flock >/dev/null 2>&1; then
    exec {lock_fd}>"$venv.lock"
    flock "$lock_fd"
  fi

  # A venv whose interpreter no longer runs (python3 upgraded or removed) is made again.
  if [ -e "$venv" ] && ! "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
    echo "==> the Python venv at $venv is broken (its python does not run); making it again" >&2
    rm -rf "$venv"
  fi
  if [ ! -x "$venv/bin/python" ]; then
    echo "==> creating a Python venv at $venv" >&2
    log=$(mktemp)
    if ! python3 -m venv "$venv" >"$log" 2>&1; then
      rm -rf "$venv"
      # Debian's python3 ships venv (and ensurepip) in a separate package.
      if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
        echo "==> installing python3-venv (python3 -m venv failed)" >&2
        if [ -z "${WASMKUBE_APT_UPDATED:-}" ]; then
          apt-get update -qq >&2 || true
          export WASMKUBE_APT_UPDATED=1
        fi
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >&2 || true
        python3 -m venv "$venv" >"$log" 2>&1 || rm -rf "$venv"
      fi
    fi
    if [ ! -x "$venv/bin/python" ]; then
      echo "error: 'python3 -m venv $venv' failed:" >&2
      sed 's/^/       /' "$log" >&2
      echo "       On Debian or Ubuntu install the venv module (sudo apt-get install python3-venv)," >&2
      echo "       or point WASMKUBE_PYTHON_VENV at a writable directory, and run this again." >&2
      rm -f "$log"
      exit 1
    fi
    rm -f "$log"
  fi

  if ! cmp -s "$requirements" "$stamp"; then
    echo "==> installing tests/python/requirements.txt into $venv" >&2
    rm -f "$stamp"
    log=$(mktemp)
    if ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
      -r "$requirements" >"$log" 2>&1; then
      echo "error: pip could not install $requirements into $venv:" >&2
      tail -n 20 "$log" | sed 's/^/       /' >&2
      echo "       Check that PyPI is reachable (pip's own error is above) and that every pin in" >&2
      echo "       requirements.txt exists for $("$venv/bin/python" --version 2>&1); then run this again" >&2
      echo "       (or delete $venv to start from a fresh venv)." >&2
      rm -f "$log"
      exit 1
    fi
    rm -f "$log"
    cp "$requirements" "$stamp"
  fi

  if [ -n "${lock_fd:-}" ]; then
    exec {lock_fd}>&-
  fi
  export WASMKUBE_PYTHON=$venv/bin/python
}
