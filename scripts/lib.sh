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
