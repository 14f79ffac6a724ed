"""``ripple`` console script. Exit 0 ok, 2 bad input or usage, 1 runtime failure.

Thin: parse flags, build the config, call one function of ``ripple.pipeline`` (or the data modules),
print the result. Every verb works without a config file; ``--config`` layers a YAML file under the flags.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys

from ripple.console import Console
from ripple.data.storage import StorageOptions, StorageUnavailable, check_url

log = logging.getLogger("ripple")

EXIT_OK, EXIT_RUNTIME, EXIT_BAD_INPUT = 0, 1, 2
#: the stages of ``ripple train`` (``ripple.pipeline.train``), as its console counts them
TRAIN_STAGES = ["validate", "train", "embed", "evaluate"]


class UsageError(ValueError):
    """Bad command-line usage (exit 2), raised instead of argparse's own exit."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse exits 2 too; keep its message on stderr
        self.print_usage(sys.stderr)
        raise UsageError(f"{self.prog}: {message}")

    def _get_values(self, action, arg_strings):
        # `--flag=--`: argparse (3.11) strips the '--' and stores [] unconverted (`--num-parts=--` reached the
        # verb as a list); convert and check it as the value it is
        if arg_strings == ["--"] and action.option_strings and action.nargs is None:
            value = self._get_value(action, "--")
            self._check_value(action, value)
            return value
        return super()._get_values(action, arg_strings)


def _storage_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--s3-endpoint-url", default=None,
                   help="S3-compatible endpoint (MinIO, moto, ...); credentials come from AWS_* variables")


def _train_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, help="YAML config file (flags override it)")
    p.add_argument("--data", default=None, help="dataset URL (local folder or s3://...)")
    p.add_argument("--storage-path", default=None, help="where runs are written (local folder or s3://...)")
    p.add_argument("--run-name", default=None, help="run folder name; re-using it resumes the run")
    p.add_argument("--num-workers", type=int, default=None, help="Ray Train workers (DDP ranks)")
    p.add_argument("--use-gpu", action="store_true", default=None, help="one GPU per worker, NCCL")
    p.add_argument("--max-failures", type=int, default=None, help="worker-group restarts from the last checkpoint")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS or a local one)")
    p.add_argument("--init-from", default=None, help="warm start: begin a new run from the best weights of this "
                                                     "run (<storage-path>/<run-name> URL)")
    _storage_flags(p)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="ripple", description="Distributed GNN training of cascade reach on social graphs.")
    p.add_argument("-v", "--verbose", action="store_true", help="logs live on the console (see each verb's -v)")
    sub = p.add_subparsers(dest="verb", required=True, parser_class=_Parser)

    g = sub.add_parser("generate", help="write a synthetic dataset")
    g.add_argument("out")
    g.add_argument("--users", type=int, default=5000)
    g.add_argument("--avg-follows", type=float, default=20.0)
    g.add_argument("--seed", type=int, default=0)
    _storage_flags(g)

    v = sub.add_parser("validate", help="check a dataset's schema, ids and values")
    v.add_argument("data")
    _storage_flags(v)

    lb = sub.add_parser("labels", help="labels from the cascade history: cut at --cutoff, past-only graph, "
                                       "future reach as labels")
    lb.add_argument("data", help="the platform's tables (local folder or s3://...)")
    when = lb.add_mutually_exclusive_group(required=True)
    when.add_argument("--cutoff", help="T: one cut, ISO-8601 time (2024-05-06T00:00:00Z) or epoch seconds; a "
                                       "random user split")
    when.add_argument("--cutoffs", help="T1,T2,...: a training table at many cut times, split by time (the last "
                                        "cut tests, the one before validates, the rest train)")
    when.add_argument("--every", help="D: cut times every D (e.g. 7d), the test cut as late as the history allows")
    lb.add_argument("--horizon", required=True, help="H: window [T, T+H) and reshare horizon, e.g. 14d, 36h")
    lb.add_argument("--out", required=True, help="where the labelled dataset goes (local folder or s3://...)")
    lb.add_argument("--min-posts", type=int, default=1, help="K: window posts a user needs for a label")
    lb.add_argument("--split-seed", type=int, default=0, help="seed of the per-user train/val/test split")
    lb.add_argument("--chunk-rows", type=int, default=1 << 20, help="rows per streamed batch")
    _storage_flags(lb)

    im = sub.add_parser("import", help="public diffusion data -> a ripple dataset (a cascade history for "
                                        "`ripple labels`)")
    im_verbs = im.add_subparsers(dest="format", required=True, parser_class=_Parser)
    sa = im_verbs.add_parser("snap-activity", help="SNAP activity lines `A B time KIND` (RT, MT, RE), e.g. Higgs")
    sa.add_argument("file", help="the activity file (local or s3://..., .gz or plain)")
    sa.add_argument("--post-gap", default="1h",
                    help="a retweet of B this long after B's previous retweet opens a new post by B (default 1h)")
    ca = im_verbs.add_parser("cascades", help="one cascade per line of `user time` chunks (Inf-VAE/DyHGCN format)")
    ca.add_argument("file", help="the cascades file (local or s3://..., .gz or plain)")
    ca.add_argument("--edges", default=None, help="social links, one `u,v` per line (default: follows are "
                                                  "inferred from the cascades)")
    ca.add_argument("--edge-direction", choices=["follower-followee", "followee-follower"],
                    default="follower-followee", help="what `u,v` means (default: u follows v)")
    for verb in (sa, ca):
        verb.add_argument("--time-unit", choices=["s", "ms", "min", "h", "d"], default="s",
                          help="unit of the file's timestamps (default s)")
        verb.add_argument("--out", required=True, help="where the dataset goes (local folder or s3://...)")
        _storage_flags(verb)

    pt = sub.add_parser("partition", help="shard a dataset for distributed training (streaming, out-of-core)")
    pt.add_argument("data")
    pt.add_argument("--num-parts", type=int, required=True, help="number of shards (GraphShard actors)")
    pt.add_argument("--out", required=True, help="where the shards and their manifest go (local or s3://...)")
    pt.add_argument("--method", choices=["lp", "hash"], default="lp",
                    help="lp: community-seeded balanced label propagation (default); hash: user id hash")
    pt.add_argument("--passes", type=int, default=4, help="label-propagation passes over follows")
    pt.add_argument("--balance", type=float, default=1.05, help="max part size / mean part size")
    pt.add_argument("--chunk-rows", type=int, default=1 << 20, help="rows per streamed batch and CSC bucket")
    pt.add_argument("--scratch", default=None, help="local folder for spill files (default: system temp)")
    _storage_flags(pt)

    t = sub.add_parser("train", help="train + evaluate + write embeddings back")
    _train_flags(t)

    sb = sub.add_parser("submit", help="run `ripple train` as a Ray job on an existing cluster",
                        usage="ripple submit [--address URL] [--no-wait] [--working-dir DIR] -- <train args>")
    sb.add_argument("--address", default=None,
                    help="Ray job API (dashboard) address, e.g. http://HEAD:8265; default RAY_API_SERVER_ADDRESS or "
                         "RAY_ADDRESS")
    sb.add_argument("--no-wait", action="store_true", help="submit and return; do not follow the logs")
    sb.add_argument("--working-dir", default=None,
                    help="upload this folder as the job's working dir (a source checkout); default: the cluster's "
                         "installed ripple")
    sb.add_argument("train_args", nargs=argparse.REMAINDER, help="after --: the arguments of `ripple train`")

    k8s = sub.add_parser("k8s", help="Kubernetes (KubeRay) manifests for a training config")
    k8s_verbs = k8s.add_subparsers(dest="k8s_verb", required=True, parser_class=_Parser)
    kr = k8s_verbs.add_parser("render", help="print the ConfigMap + RayJob that run `ripple train` on KubeRay")
    _train_flags(kr)
    kr.add_argument("--image", default=None,
                    help="container image (k8s.image), e.g. registry.example.com/ripple:0.1.0")
    kr.add_argument("--namespace", default=None, help="namespace of the manifests (k8s.namespace)")
    kr.add_argument("-o", "--output", default=None, help="write the YAML to this file instead of stdout")

    e = sub.add_parser("embed", help="(re)write embeddings from a run's best checkpoint, or score another snapshot")
    e.add_argument("run", help="<storage-path>/<run-name>")
    e.add_argument("--data", default=None, help="another snapshot of the tables (a newer export) to score with the "
                                                "run's model; needs --out")
    e.add_argument("--out", default=None, help="where the snapshot's embeddings and scores go (with --data)")
    e.add_argument("--as-of", default=None, help="score the snapshot as it stood strictly before T (ISO-8601 or epoch "
                                                 "seconds): later edges dropped, activity features recomputed")
    _storage_flags(e)

    sd = sub.add_parser("seeds", help="influence maximization: K seed users from a trained run -> <run>/seeds.parquet")
    sd.add_argument("run", help="<storage-path>/<run-name> of a trained run (with committed embeddings)")
    sd.add_argument("--k", type=int, required=True, help="number of seed users (>= 1)")
    sd.add_argument("--candidates", type=int, default=None,
                    help="candidate pool: the users with the highest predicted reach the greedy considers "
                         "(default max(1000, 10 K))")
    sd.add_argument("--evaluate", action="store_true",
                    help="also compare against follower count, PageRank, DegreeDiscount and CELF by simulated IC "
                         "spread on <data>/_truth (synthetic data only) -> <run>/seeds_eval.json, metrics.json")
    sd.add_argument("--sims", type=int, default=1000, help="IC simulations per evaluated seed set (--evaluate)")
    _storage_flags(sd)

    d = sub.add_parser("demo", help="generate -> validate -> train -> evaluate -> write back, locally")
    d.add_argument("--out", default="ripple-demo")
    d.add_argument("--users", type=int, default=4000)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--num-workers", type=int, default=2)
    d.add_argument("--epochs", type=int, default=None)
    d.add_argument("--history", action="store_true",
                   help="learn from the generated post history: generate -> labels (cutoff mid-history, horizon "
                        "a quarter of it) -> train -> evaluate against the future and the truth oracle")
    # -v after the verb too (`ripple train -v`), as people type it; SUPPRESS keeps a -v given before the verb
    for verb in [*sub.choices.values(), *k8s_verbs.choices.values(), *im_verbs.choices.values()]:
        verb.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                          help="ripple's, Ray's and Ray Train's logs live on the console (they always go to "
                               "<run>/logs/)")
    return p


def _options(args) -> StorageOptions | None:
    url = getattr(args, "s3_endpoint_url", None) or os.environ.get("RIPPLE_S3_ENDPOINT_URL")
    return StorageOptions(endpoint_url=url) if url else None


def config_from_args(args):
    from ripple.config import load_config

    overrides = {"data": args.data, "storage_path": args.storage_path, "run_name": args.run_name,
                 "scaling.num_workers": args.num_workers, "scaling.use_gpu": args.use_gpu,
                 "scaling.max_failures": args.max_failures, "scaling.address": args.address,
                 "train.epochs": args.epochs, "train.init_from": getattr(args, "init_from", None),
                 "storage.endpoint_url": getattr(args, "s3_endpoint_url", None),
                 "k8s.image": getattr(args, "image", None), "k8s.namespace": getattr(args, "namespace", None)}
    return load_config(args.config, overrides)


def _print_metrics(metrics: dict) -> None:
    from ripple.evaluate.compare import MODEL_ORDER
    from ripple.evaluate.metrics import METRIC_NAMES, format_table

    table = {m: metrics[m] for m in METRIC_NAMES}
    if metrics.get("spearman_vs_truth"):  # history labels on synthetic data: the oracle's column
        table["spearman_vs_truth"] = {k: v for k, v in metrics["spearman_vs_truth"].items() if k != "users"}
    if metrics.get("spearman_active"):  # test users with past activity, when some have none
        table[f"spearman_active ({metrics['active_test_users']:,})"] = metrics["spearman_active"]
    if metrics.get("val_spearman"):  # what chose the written influence_score
        table["val_spearman"] = metrics["val_spearman"]
    present = [m for m in MODEL_ORDER if any(m in col for col in table.values())]
    print(format_table(table, order=present))
    thr = metrics.get("throughput", {})
    best = metrics.get("best_epoch")
    print(f"kernel backend: {metrics.get('kernel_backend')}; train {thr.get('train_seeds_per_s') or 0:.0f} "
          f"seeds/s over {thr.get('num_workers')} workers; best epoch {best + 1 if best is not None else None}")
    chosen = (metrics.get("influence_score") or {}).get("model")
    if chosen:
        print(f"influence_score written by: {chosen} (the best validation Spearman)")


def cmd_generate(args) -> int:
    from ripple.data.generator import GeneratorConfig, generate

    cfg = GeneratorConfig(users=args.users, avg_follows=args.avg_follows, seed=args.seed)
    console = Console(["users", "follows", "content", "history", "communities", "labels"])
    m = generate(args.out, cfg, _options(args), progress=console.stage)
    print(json.dumps(m["rows"], indent=1))
    return EXIT_OK


def cmd_validate(args) -> int:
    from ripple.data.validate import validate_dataset

    report = validate_dataset(args.data, _options(args))
    print(report.text())
    return EXIT_OK if report.ok else EXIT_BAD_INPUT


def cmd_labels(args) -> int:
    from ripple.data.history import parse_duration, parse_time
    from ripple.data.labels import LabelSpec, derive_labels
    from ripple.data.storage import absolute_url

    if args.chunk_rows < 1:
        raise UsageError(f"--chunk-rows must be >= 1, got {args.chunk_rows}")
    horizon, kw = parse_duration(args.horizon), {"min_posts": args.min_posts, "split_seed": args.split_seed}
    data = absolute_url(args.data)
    if args.cutoff is not None:
        spec = LabelSpec(cutoff=parse_time(args.cutoff), horizon=horizon, **kw)
    elif args.cutoffs is not None:
        spec = LabelSpec.many([parse_time(t, "--cutoffs") for t in args.cutoffs.split(",") if t.strip()], horizon,
                              **kw)
    else:  # placed on the history once derive_labels has validated the tables
        spec = LabelSpec.every_(parse_duration(args.every, "--every"), horizon, **kw)
    m = derive_labels(data, absolute_url(args.out), spec, _options(args), args.chunk_rows)
    info = m["labels"]
    print(json.dumps({"rows": m["rows"], **{k: info[k] for k in ("cutoff_iso", "horizon_s", "min_posts", "split",
                                                                  "window_posts", "labelled_users", "reliability",
                                                                  "cutoffs") if k in info}}, indent=1))
    return EXIT_OK


def cmd_import(args) -> int:
    from ripple.data.history import parse_duration
    from ripple.data.storage import absolute_url

    out = absolute_url(args.out)
    if args.format == "snap-activity":
        from ripple.data.ingest.snap import import_snap_activity

        gap = parse_duration(args.post_gap, "--post-gap")
        m = import_snap_activity(absolute_url(args.file), out, _options(args), post_gap=gap, time_unit=args.time_unit)
    else:
        from ripple.data.ingest.cascades import import_cascades

        m = import_cascades(absolute_url(args.file), out, _options(args),
                            edges=absolute_url(args.edges) if args.edges else None,
                            edge_direction=args.edge_direction, time_unit=args.time_unit)
    src = m["source"]
    print(json.dumps({"out": out, "rows": m["rows"], "history": m["history"], "follows": src["follows"]["graph"],
                      "dropped": {**src["dropped"], **src.get("edges", {}).get("dropped", {}),
                                  "blank_lines": src.get("blank", 0), "comment_lines": src.get("comments", 0)},
                      "seconds": m["seconds"]}, indent=1))
    return EXIT_OK


def cmd_partition(args) -> int:
    from ripple.config import PartitionConfig
    from ripple.data.storage import absolute_url
    from ripple.data.validate import require_valid
    from ripple.graph.partition import partition

    cfg = PartitionConfig(num_parts=args.num_parts, method=args.method, passes=args.passes, balance=args.balance,
                          chunk_rows=args.chunk_rows, scratch=args.scratch)
    if cfg.num_parts < 1:
        raise UsageError(f"--num-parts must be >= 1, got {cfg.num_parts}")
    data, out = absolute_url(args.data), absolute_url(args.out)
    require_valid(data, _options(args))
    m = partition(data, out, cfg, _options(args))
    print(json.dumps({k: m[k] for k in ("num_parts", "node_counts", "edge_cut", "stats")}, indent=1))
    return EXIT_OK


def cmd_train(args) -> int:
    from ripple import pipeline

    cfg = config_from_args(args)
    console = Console(TRAIN_STAGES, epochs=cfg.train.epochs)
    metrics = pipeline.train(cfg, console, verbose=args.verbose)
    _print_metrics(metrics)
    _print_outputs(cfg, metrics)
    return EXIT_OK


def _print_outputs(cfg, metrics: dict) -> None:
    from ripple.run import run_dir
    from ripple.runlog import LOGS

    where = run_dir(cfg)
    print(f"outputs under {where}: metrics.json, {', '.join(metrics.get('pictures', []))}, embeddings/, {LOGS}/")


def cmd_submit(args) -> int:
    from ripple.deploy.submit import submit

    train_args = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
    # parse them here: bad train arguments are refused before anything reaches the cluster
    cfg = config_from_args(build_parser().parse_args(["train", *train_args]))
    return submit(train_args, cfg.run_name, address=args.address, wait=not args.no_wait,
                  working_dir=args.working_dir)


def cmd_k8s(args) -> int:
    from ripple.deploy.k8s import render_yaml

    text = render_yaml(config_from_args(args))  # k8s_verb is "render", the only one
    if args.output:
        with open(args.output, "w") as f:
            f.write(text)
        log.info("wrote %s", args.output)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def cmd_embed(args) -> int:
    from ripple import pipeline

    from ripple.data.history import parse_time

    as_of = None if args.as_of is None else parse_time(args.as_of, "--as-of")
    m = pipeline.embed(args.run, _options(args), data=args.data, out=args.out, as_of=as_of)
    print(f"wrote {m['rows']} embeddings in {len(m['parts'])} parts" + (f" to {args.out}" if args.out else ""))
    return EXIT_OK


def cmd_seeds(args) -> int:
    from ripple import pipeline

    if args.k < 1:
        raise UsageError(f"--k must be >= 1, got {args.k}")
    if args.candidates is not None and args.candidates < args.k:
        raise UsageError(f"--candidates must be >= --k ({args.k}), got {args.candidates}")
    if args.sims < 1:
        raise UsageError(f"--sims must be >= 1, got {args.sims}")
    if args.evaluate:  # before any work: say which extra is missing now, not after the selection
        from ripple.influence.spread import require_cynetdiff

        require_cynetdiff()
    out = pipeline.seeds(args.run, args.k, _options(args), candidates=args.candidates, evaluate=args.evaluate,
                         sims=args.sims)
    t = out["seeds"]
    print(f"wrote {t.num_rows} seeds to {out['path']} ({out['selection_s']:.2f}s, {out['candidates']} candidates "
          f"of {out['users']} users)")
    for r in t.slice(0, 10).to_pylist():
        print(f"  {r['rank']:>4}  user {r['user_id']:<12} predicted reach {r['score']:8.2f}  "
              f"marginal gain {r['marginal_gain']:8.2f}")
    if "evaluation" in out:
        print(f"{'method':<16} {'k':>4} {'spread':>18} {'selection_s':>12}")
        for r in out["evaluation"]["table"]:
            print(f"{r['method']:<16} {r['k']:>4} {r['spread_mean']:>10.1f} +- {r['spread_se']:<5.1f} "
                  f"{r['selection_s']:>12.3f}")
        print(f"spread vs K: {out['picture']}")
    return EXIT_OK


def cmd_demo(args) -> int:
    from ripple import pipeline
    from ripple.config import load_config
    from ripple.data.generator import GeneratorConfig, generate
    from ripple.data.storage import join

    data = join(args.out, "data")
    run_name = f"demo-history-{args.seed}" if args.history else f"demo-{args.seed}"
    cfg = load_config(None, {"storage_path": join(args.out, "runs"), "run_name": run_name,
                             "scaling.num_workers": args.num_workers, "train.epochs": args.epochs})
    console = Console(["generate", *(["labels"] if args.history else []), *TRAIN_STAGES], epochs=cfg.train.epochs)
    console.stage("generate")
    gen = GeneratorConfig(users=args.users, seed=args.seed)
    generate(data, gen)
    if args.history:
        from ripple.data.labels import LabelSpec, derive_labels

        console.stage("labels")
        start, end = gen.history["start"], gen.history["end"]
        horizon = (end - start) // 4
        data_hist = join(args.out, "data-labelled")
        derive_labels(data, data_hist, LabelSpec(cutoff=end - 2 * horizon, horizon=horizon, split_seed=args.seed))
        data = data_hist
    cfg = dataclasses.replace(cfg, data=data)
    metrics = pipeline.train(cfg, console, verbose=args.verbose)
    _print_metrics(metrics)
    _print_outputs(cfg, metrics)
    print(f"demo finished in {console.elapsed():.0f}s")
    return EXIT_OK


COMMANDS = {"generate": cmd_generate, "validate": cmd_validate, "labels": cmd_labels, "import": cmd_import,
            "partition": cmd_partition,
            "train": cmd_train,
            "submit": cmd_submit, "k8s": cmd_k8s, "embed": cmd_embed, "seeds": cmd_seeds,
            "demo": cmd_demo}


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except UsageError as e:  # after argparse's usage lines: one error line, as every refusal ends
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    # the console shows warnings (and, with -v, every record); a run's logs/ folder keeps INFO (ripple.runlog)
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    console.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s" if args.verbose
                                           else "%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, handlers=[console])
    for noisy in ("botocore", "s3fs", "aiobotocore", "fsspec", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        for name, value in vars(args).items():  # before any verb echoes a URL: none may carry credentials
            for v in value if isinstance(value, list) else [value]:
                check_url(v, name)
        return COMMANDS[args.verb](args)
    except StorageUnavailable as e:  # the storage service kept failing through every retry: not the input's fault
        print(f"error: {e}", file=sys.stderr)
        return EXIT_RUNTIME
    except ValueError as e:  # bad input: config, dataset, URL, manifest — every such error is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return EXIT_RUNTIME
    except Exception as e:  # noqa: BLE001 — the CLI's job is to turn failures into an exit code
        # one error line; the traceback shows with -v, and a run's logs/ripple.log keeps it (ripple.runlog)
        log.debug("ripple %s failed", args.verb, exc_info=True)
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_RUNTIME


if __name__ == "__main__":
    sys.exit(main())
