"""The kit's Invoke tasks (`inv --list`; `inv <task> --help`). Logic lives in kit/.

Every task is also a make target (see Makefile). The serving backend is `native` (pyserving)
unless --backend says `docker` (the official tensorflow/serving image) or `binary` (the
tensorflow_model_server built by `inv build-server`).
"""
from __future__ import annotations

import os
import time

from invoke import Collection, Context
from invoke.exceptions import Exit

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from kit import model_config, paths, targets  # noqa: E402
from kit.images import bazel_build as bb  # noqa: E402
from kit.images import build, pyserving_image  # noqa: E402
from kit.images import zlib_repro as zlib_repro_mod  # noqa: E402
from kit.k8s import cluster as k8s  # noqa: E402
from kit.k8s import deploy as deploy_mod  # noqa: E402
from kit.pipeline import query, train  # noqa: E402
from kit.pipeline import reproduce as steps  # noqa: E402
from kit.rollout import updates  # noqa: E402
from kit.serve import backends, flags  # noqa: E402
from kit.serve import server as serving  # noqa: E402
from kit.task import runner, show, task  # noqa: E402

BACKEND_HELP = backends.HELP
VERBOSE_HELP = "show TensorFlow's start-up log lines (CUDA errors on a machine without a GPU)"


@task(help={
    "rows": "questions in a generated corpus (0: the shipped sample.csv; 60000 is the tutorial's scale)",
    "classes": "classes in a generated corpus, 1..128 (the tutorial has 124)",
    "epochs": "training epochs", "batch_size": "minibatch size", "regulation_rate": "L2 weight",
    "version": "model version to export", "seed": "random seed",
    "dry_run": "print the commands it would run, run none", "verbose": VERBOSE_HELP,
})
def train_svm(c: Context, rows: int = 0, classes: int = 124, epochs: int = 20, batch_size: int = 64,
              regulation_rate: float = 1e-4, version: int = 1, seed: int = 0, dry_run: bool = False,
              verbose: bool = False) -> None:
    """Train the Chinese-text linear SVM (squared hinge) and export build/models/svm/<version>."""
    train.train_svm(show if dry_run else runner(c, verbose), rows, classes, epochs, batch_size,
                       regulation_rate, version, seed, dry_run=dry_run)


@task(help={
    "iterations": "training iterations", "version": "model version to export",
    "data_dir": "folder holding the MNIST IDX files (default: the offline scikit-learn digits stand-in)",
    "download": "download real MNIST (needs a network; checksums verified)", "seed": "random seed",
    "dry_run": "print the command it would run, run none", "verbose": VERBOSE_HELP,
})
def train_mnist(c: Context, iterations: int = 1000, version: int = 1, data_dir: str = "",
                download: bool = False, seed: int = 0, dry_run: bool = False, verbose: bool = False) -> None:
    """Train the MNIST softmax regression and export build/models/mnist/<version>."""
    train.train_mnist(show if dry_run else runner(c, verbose), iterations, version, data_dir or None, download,
                         seed, dry_run=dry_run)


@task(help={"backend": BACKEND_HELP, "grpc_port": "gRPC port (replica i: +10*i)",
            "rest_port": "REST port (replica i: +10*i)",
            "host": "127.0.0.1 (this machine only) or 0.0.0.0 (every interface; the binary always listens there)",
            "replicas": "servers sharing build/models and its models.config, as pods share a volume and a ConfigMap",
            "workers": "native: worker processes per server sharing its two ports (--pyserving_num_workers); a "
                       "rollout waits for every worker",
            "models_uri": "native: serve gs://... or s3://... holding svm/<N>/, mnist/<N>/ instead of build/models "
                          "(remembered: the rollout tasks and inv versions use it until a serve without it)",
            "stop": "stop the running server (every replica) instead", "dry_run": "print the serve command(s) only"})
def serve(c: Context, backend: str = "native", grpc_port: int = 8500, rest_port: int = 8501,
          host: str = flags.LOOPBACK, replicas: int = 1, workers: int = 1, models_uri: str = "",
          stop: bool = False, dry_run: bool = False) -> None:
    """Serve build/models (svm, mnist) in the background, or stop the server (--stop); --replicas=N
    starts N servers on loopback, replica i on ports +10*i; --workers=N runs N pyserving workers
    on each server's ports; --models-uri serves a bucket (credentials and endpoint from the
    environment, as pyserving reads them)."""
    if stop:
        if not serving.stop(run=c.run):
            print("no server is running")
        return
    backends.check(backend, here=False)
    if host not in flags.HOSTS:
        raise Exit(f"--host must be {' or '.join(flags.HOSTS)}, got {host!r}: the kit's clients connect to "
                   f"{flags.LOOPBACK}")
    if workers < 1:
        raise Exit(f"--workers must be at least 1, got {workers}")
    if workers > 1 and backend != "native":
        raise Exit(f"--workers is pyserving's (--pyserving_num_workers): the {backend} backend has no workers")
    try:
        ports = serving.replica_ports(grpc_port, rest_port, replicas)
    except ValueError as exc:
        raise Exit(str(exc)) from None
    if models_uri and backend != "native":
        raise Exit(f"--models-uri is served by pyserving (--backend=native): TF Serving ({backend}) has no s3:// "
                   "since 2.7, and its gs:// ignores STORAGE_EMULATOR_HOST")
    if not dry_run and serving.running():  # before models.config changes under the running server
        raise Exit(f"a server is already running ({paths.SERVER_STATE}); stop it first: inv serve --stop")
    model_config.set_models_uri(models_uri)
    config = model_config.served()
    extra = [f"--pyserving_num_workers={workers}"] if workers > 1 else []
    if dry_run:
        backends.get(backend).prepare()  # what the printed command reads besides models.config
        for i, (grpc, rest) in enumerate(ports):
            show(" ".join(serving.serve_command(backend, config, grpc, rest, extra, host=host, index=i)))
        return
    try:
        serving.start(backend, grpc_port, rest_port, run=c.run, host=host, replicas=replicas, workers=workers)
    except RuntimeError as exc:
        raise Exit(str(exc)) from None
    print("stop it with: inv serve --stop")


def _ports(kind: str, given: str) -> list[int]:
    """The ports to query: `given` (comma-separated, e.g. port-forwards to pods), else every
    replica `inv serve` started."""
    if given:
        try:
            return [int(p) for p in given.split(",")]
        except ValueError:
            raise Exit(f"--{kind.replace('_', '-')} takes port numbers separated by commas, got {given!r}") from None
    state = serving.running()
    if state is None:
        raise Exit(serving.NO_SERVER)
    return [r[kind] for r in state["replicas"]]


@task(help={"num": "rows of the dev CSV to send", "verbose": VERBOSE_HELP,
            "rest_port": "REST port(s) to query, comma-separated (default: every replica inv serve started)"})
def test_svm(c: Context, num: int = 5, verbose: bool = False, rest_port: str = "") -> None:
    """Query the served SVM over REST with the tutorial's client (text -> its version's vocabulary),
    spread over the replicas; during a rollout it asks for labels/stable."""
    label = updates.svm_label()
    if label:
        print(f"[test-svm] a rollout is active: asking for labels/{label}")
    query.query_svm(runner(c, verbose), _ports("rest_port", rest_port), num, label=label)


@task(help={"num_tests": "test images to send", "concurrency": "requests in flight",
            "data_dir": "MNIST IDX folder (default: the offline stand-in)", "verbose": VERBOSE_HELP,
            "grpc_port": "gRPC port(s) to query, comma-separated (default: every replica inv serve started)"})
def test_mnist(c: Context, num_tests: int = 1000, concurrency: int = 8, data_dir: str = "",
               verbose: bool = False, grpc_port: str = "") -> None:
    """Query the served MNIST model over gRPC with the mnist_client; prints the error rate."""
    query.query_mnist(runner(c, verbose), _ports("grpc_port", grpc_port), num_tests, concurrency,
                         data_dir or None)


@task(help={
    "backend": BACKEND_HELP, "svm_rows": "SVM corpus size (0: shipped sample)", "svm_epochs": "SVM epochs",
    "mnist_iterations": "MNIST training iterations", "mnist_data_dir": "MNIST IDX folder (default: offline stand-in)",
    "grpc_port": "gRPC port", "rest_port": "REST port", "num_tests": "MNIST test images",
    "dry_run": "print every command it would run, run none", "verbose": VERBOSE_HELP,
})
def reproduce(c: Context, backend: str = "native", svm_rows: int = 0, svm_epochs: int = 20,
              mnist_iterations: int = 1000, mnist_data_dir: str = "", grpc_port: int = 8500,
              rest_port: int = 8501, num_tests: int = 1000, dry_run: bool = False, verbose: bool = False) -> None:
    """Everything: train both models, serve them, query them over REST and gRPC, stop the server."""
    started = time.monotonic()
    options = steps.Options(backend, svm_rows, svm_epochs, mnist_iterations, mnist_data_dir, grpc_port, rest_port,
                            num_tests)
    backends.check(backend, here=not dry_run)
    if dry_run:
        steps.steps(options, show, steps.shown_server(), dry_run=True)
        return
    steps.steps(options, runner(c, verbose), steps.live_server(c.run))
    print(f"reproduce: done in {time.monotonic() - started:.0f} s; nothing left running")


# ---- online updates (logic in kit/rollout/updates.py) ----------------------------------------------
TARGET_HELP = {"target": "local (the replicas inv serve started) or k8s (the ready pods of --namespace; the "
                         "models.config ConfigMap carries the step)",
               "namespace": "--target=k8s: the namespace inv deploy --apply used",
               "dry_run": "--target=k8s: print the kubectl commands and the ConfigMap of each step, run none"}


@task(help={"model": "svm or mnist", "source": "SavedModel folder to publish (default: a copy of the newest version)",
            "force": "publish without checking that it loads and fits the stable version's signatures",
            "target": "where the version is pinned first: local or k8s (build/models is the pods' volume)",
            "namespace": TARGET_HELP["namespace"],
            "to": "a bucket base path (gs://bucket/path/<model> or s3://...): upload there, atomically, instead"})
def publish(c: Context, model: str = "svm", source: str = "", force: bool = False, target: str = "local",
            namespace: str = k8s.DEFAULT_NAMESPACE, to: str = "") -> None:
    """Check a SavedModel (it loads, warmup included; its signatures fit the stable version's), then
    publish it as <base>/<N+1>: written beside it, flushed, renamed into place (--to: uploaded to a
    bucket under a hidden prefix, then copied into place, model file last)."""
    if to:
        updates.publish_to(model, to, source, force)
        return
    updates.publish(model, source, force, where=targets.target(target, namespace))


@task(help={"model": "svm or mnist", "version": "version to canary (default: the newest on disk)", **TARGET_HELP})
def canary(c: Context, model: str = "svm", version: int = 0, target: str = "local",
           namespace: str = k8s.DEFAULT_NAMESPACE, dry_run: bool = False) -> None:
    """Serve a new version beside the stable one, under the label `canary`, on every replica; a version
    that fails to load stops it with the server's error, and the servers go back to what they served."""
    updates.canary(model, version, where=targets.target(target, namespace, dry_run))


@task(help={"model": "svm or mnist", **TARGET_HELP})
def promote(c: Context, model: str = "svm", target: str = "local", namespace: str = k8s.DEFAULT_NAMESPACE,
            dry_run: bool = False) -> None:
    """Make the canary the stable version (the old stable stays loaded as `previous`), on every replica."""
    updates.transition(model, "promote", where=targets.target(target, namespace, dry_run))


@task(help={"model": "svm or mnist", **TARGET_HELP})
def rollback(c: Context, model: str = "svm", target: str = "local", namespace: str = k8s.DEFAULT_NAMESPACE,
             dry_run: bool = False) -> None:
    """Drop the canary, or make the previous stable version stable again (a label move), on every replica."""
    updates.transition(model, "rollback", where=targets.target(target, namespace, dry_run))


@task(help={"model": "svm or mnist"})
def versions(c: Context, model: str = "svm") -> None:
    """What is on disk (or in the bucket inv serve --models-uri serves), which roles the rollout
    gives, and each version's state and error on the server."""
    updates.versions(model)


@task(help={"model": "svm or mnist", "version": "version to delete"})
def remove(c: Context, model: str = "svm", version: int = 0) -> None:
    """Delete a version from disk (or the bucket served), unless a label names it or it is the only one serving."""
    updates.remove(model, version)


@task(help={"switches": "switches to make (canary, promote, rollback)", "seconds": "time limit (per soak)",
            "rest_clients": "REST clients", "grpc_clients": "gRPC clients",
            "replicas": "servers sharing the soak's models.config; with 2 or more, one is stopped (SIGTERM) and one "
                        "killed (SIGKILL) mid-rollout and both started again",
            "compare": "run the same soak with 1 replica first and print both side by side",
            "workers": "pyserving workers on the one replica's port pair (--pyserving_num_workers); with 2 or "
                       "more, a worker is SIGKILLed during a rollout step and its supervisor starts it again"})
def soak(c: Context, switches: int = 24, seconds: int = 300, rest_clients: int = 2, grpc_clients: int = 2,
         replicas: int = 1, compare: bool = False, workers: int = 1) -> None:
    """Steady REST+gRPC load on loopback while versions are published, canaried, promoted, rolled back."""
    from kit.soak import report as soak_report
    from kit.soak import run as soak_run

    if replicas < 1:
        raise Exit(f"--replicas must be at least 1, got {replicas}")
    if workers < 1:
        raise Exit(f"--workers must be at least 1, got {workers}")
    if workers > 1 and (replicas > 1 or compare):
        raise Exit("--workers goes with one replica: the soak then kills a worker, not a replica")
    runs = sorted({1, replicas}) if compare else [replicas]
    failures, summaries = [], {}
    for n in runs:
        out = paths.BUILD / "soak" if len(runs) == 1 else paths.BUILD / "soak" / f"replicas-{n}"
        summary = soak_run.run(out, switches, seconds, rest_clients, grpc_clients, replicas=n, workers=workers)
        line, failure = soak_report.report(summary, out, wanted=switches)
        print(line)
        summaries[n] = summary
        if failure:
            failures.append(failure if len(runs) == 1 else f"replicas={n}: {failure}")
    if len(runs) > 1:
        for text in soak_report.comparison(summaries, paths.BUILD / "soak" / "comparison.json"):
            print(text)
    if failures:
        raise Exit("\n".join(failures))


# ---- Kubernetes (logic in kit/k8s/deploy.py, kit/k8s/cluster.py; manifests in deploy/) ---------------------
@task(help={
    "overlay": "tfserving (the official image) | pyserving (the kit's image)",
    "storage": "pvc (a ReadOnlyMany volume) | gcs (gs://, tfserving only) | s3 (S3/MinIO, copied at pod start)",
    "image": "server image, pinned name:tag (default: tensorflow/serving:2.21.0 or kit-pyserving:<version>)",
    "replicas": "replicas (and the autoscaler's minimum)", "namespace": "Kubernetes namespace",
    "models_uri": "gs://... or s3://... holding svm/<N>/, mnist/<N>/ (default: gs:// or s3://kit-models/models)",
    "apply": "kubectl apply it and wait for the rollout (needs a cluster)",
    "dry_run": "print every command; render and check offline, touch no cluster",
    "allow_namespace": "also let pods of this namespace reach ports 8500/8501 (e.g. ingress-nginx)",
    "allow_pods": "also let pods with these labels (key=value[,...]) reach 8500/8501 (with --allow-namespace: there)",
    "workload_identity": "gcs: the Google service account (GKE Workload Identity); s3: the IAM role ARN (EKS IRSA)",
    "pin_digests": "give every image by the digest its registry resolves the tag to (production); "
                   "without a reachable registry one line says so and the tag stays",
})
def deploy(c: Context, overlay: str = "tfserving", storage: str = "pvc", image: str = "", replicas: int = 2,
           namespace: str = k8s.DEFAULT_NAMESPACE, models_uri: str = "", apply: bool = False,
           dry_run: bool = False, allow_namespace: str = "", allow_pods: str = "", workload_identity: str = "",
           pin_digests: bool = False) -> None:
    """Render build/deploy/<overlay>.yaml for the kit's models (the models.config `inv serve` writes),
    check it offline (Kubernetes schemas, semantic checks), and with --apply apply it."""
    try:
        deploy_mod.deploy(overlay, storage, image, replicas, namespace, models_uri, apply=apply, dry_run=dry_run,
                          access=deploy_mod.Access(allow_namespace, allow_pods, workload_identity), pin=pin_digests)
    except deploy_mod.DeployError as exc:
        raise Exit(str(exc)) from None


# ---- images and the Bazel build (logic in kit/images/) --------------------------------------
@task(help={
    "target": "devel (docker/Dockerfile: TF Serving's devel image plus the kit's Python) or "
              "pyserving (docker/pyserving.Dockerfile: the model server image)",
    "tag": f"name of the image to build (default: {bb.DEVEL_IMAGE} for devel, "
           f"{pyserving_image.DEFAULT_TAG} for pyserving)",
    "base_tag": "TF Serving devel image to start FROM: a full reference or just a "
                f"tag of {bb.BASE_IMAGE_REPO} (devel only)",
    "dry_run": "print the command without running it",
})
def image(c: Context, tag: str = "", base_tag: str = bb.BASE_DEVEL_IMAGE, dry_run: bool = False,
          target: str = "devel") -> None:
    """Build an image: the development image (default) or, with --target=pyserving, the model server's."""
    build.image(c, tag, base_tag, dry_run, target)


@task(help={
    "serving_tag": "TF Serving release tag to clone and build",
    "image": "devel image to build in (build it with `image`)",
    "bazel_options": "extra bazel build options, e.g. '--local_ram_resources=4096 --jobs=2'",
    "dry_run": "print the commands without running them",
})
def build_server(c: Context, serving_tag: str = bb.TF_SERVING_GIT_TAG, image: str = bb.DEVEL_IMAGE,
                 bazel_options: str = "", dry_run: bool = False) -> None:
    """Build tensorflow_model_server from source with Bazel in the devel image.

    Clones TF Serving into build/src/serving, runs `bazel build -c opt` in a
    container with a persistent output base under build/bazel-cache, applies
    patches/protobuf-zlib.patch and retries once if Bazel stops on protobuf's
    '@zlib' dependency, then copies the binary to build/bin/.
    """
    build.build_server(c, serving_tag, image, bazel_options, dry_run)


@task(help={"patch_file": "the patch step 2 applies (default: patches/protobuf-zlib.patch)"})
def zlib_repro(c: Context, patch_file: str = "") -> None:
    """The post's Bazel failure and its fix, with a real Bazel (Debian's bazel-bootstrap).

    Builds patches/repro (zlib declared only as @zlib_archive, as in TF Serving) against protobuf
    3.8.0: as released it must stop with no such package '@zlib//'; then applies the patch as
    `inv build-server` does, builds again and runs the binary. Sources: ../shared/bazel-offline
    ($KIT_BAZEL_OFFLINE_DIR) when there, else Bazel's own downloads. Cached: `reused` unless the
    workspace, the patch or the code changed.
    """
    zlib_repro_mod.zlib_repro(c, patch_file)


ns = Collection(train_svm, train_mnist, serve, test_svm, test_mnist, reproduce, image, build_server,
                publish, canary, promote, rollback, versions, remove, soak, deploy, zlib_repro)
