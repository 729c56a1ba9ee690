# The two commands that matter: `make demo` (Backstop's main job on a local cluster) and
# `make test` (every test). Both need root; the first run builds Kubernetes (about 10 minutes).
.PHONY: demo test bench bench-controller bench-sync cluster-up cluster-down image mutants

demo:
	hack/demo

test:
	hack/test

cluster-up:
	hack/cluster up

cluster-down:
	hack/cluster down

image:
	hack/image

# Mover throughput against tar/gzip, tar|zstd and restic on the same seeded data (not part of `make test`).
# BENCH_ARGS=--quick for small datasets. Needs tar, zstd and restic (installed here when missing).
bench:
	command -v restic >/dev/null || (apt-get update -qq && apt-get install -y -qq restic zstd >/dev/null)
	cargo build --release --locked -p backstop -p backstop-bench
	"$${CARGO_TARGET_DIR:-target}/release/backstop-bench" mover $(BENCH_ARGS)

# The operator at scale on the local cluster: 1,000 policies, 10,000 backups of history; RSS, time to
# a next run on every policy, per-minute scheduling delay, API requests/s. BENCH_ARGS to change sizes:
# ten times as much is BENCH_ARGS="--policies 10000 --backups 100000 --per-minute 200" (25 minutes).
bench-controller:
	hack/bench-controller $(BENCH_ARGS)

# A new cluster importing 1,000 backups from one repository (BENCH_ARGS="--backups N").
bench-sync:
	hack/bench-controller sync $(BENCH_ARGS)

# Mutation testing of the mover and the controller's pure modules (not part of `make test`: over an
# hour on 2 cores). MUTANTS=pure, MUTANTS=mover or MUTANTS=cli for one part.
mutants:
	hack/mutants $(MUTANTS)
