# The two commands that matter: `make demo` (Backstop's main job on a local cluster) and
# `make test` (every test). Both need root; the first run builds Kubernetes (about 10 minutes).
.PHONY: demo test cluster-up cluster-down image

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
