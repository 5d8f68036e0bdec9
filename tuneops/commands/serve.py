"""`tuneops serve --version NAME@VERSION|NAME@latest|PATH`: the TGI-compatible built-in server.

Same HTTP API as Hugging Face TGI (POST /, /generate, /generate_stream, /v1/chat/completions, ...), so clients
do not change between a laptop and a cluster. Settings also come from TGI's environment variable names
(PORT, MAX_INPUT_TOKENS, MAX_TOTAL_TOKENS, MAX_CONCURRENT_REQUESTS), as in a TGI pod spec.
"""

import argparse
import os
import sys


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value and value.isdigit() else default


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("serve", help="serve a model version over TGI-compatible HTTP")
    p.add_argument("--version", required=True, metavar="NAME@VERSION|NAME@latest|PATH",
                   help="registry version (TUNEOPS_HOME/registry) or a model / version directory")
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=_env_int("PORT", 3000))
    p.add_argument("--max-input-tokens", type=int, default=_env_int("MAX_INPUT_TOKENS", 1024))
    p.add_argument("--max-total-tokens", type=int, default=_env_int("MAX_TOTAL_TOKENS", 2048))
    p.add_argument("--max-concurrent-requests", type=int, default=_env_int("MAX_CONCURRENT_REQUESTS", 128),
                   help="admitted requests (queued + generating); above it requests get 429")
    p.add_argument("--max-batch-size", type=int, default=16, help="sequences decoded together")
    p.add_argument("--request-timeout", type=float, default=120.0, metavar="SECONDS")
    p.add_argument("--drain-timeout", type=float, default=30.0, metavar="SECONDS",
                   help="on SIGTERM, how long in-flight requests may take to finish")
    p.add_argument("--api-token-file", metavar="FILE",
                   help="require `Authorization: Bearer <token>` (or set TUNEOPS_API_TOKEN)")
    p.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN", help="allow CORS from ORIGIN")
    p.add_argument("--drift-reference", metavar="FILE",
                   help="drift reference: a profile (.json) or training prompts (.jsonl); default: "
                        "drift_profile.json in the version directory, if any")
    p.add_argument("--no-drift-embeddings", dest="drift_embeddings", action="store_false",
                   help="do not embed prompts for sentence-embedding drift (token/length drift stays on)")
    p.add_argument("--drift-embedding-centroid-threshold", type=float, default=0.1, metavar="D",
                   help="drift when the live prompts' embedding centroid is farther than D (cosine distance) "
                        "from the training prompts' centroid (default 0.1)")
    p.add_argument("--drift-embedding-outlier-threshold", type=float, default=0.25, metavar="F",
                   help="drift when more than F of the live prompts lie beyond the training prompts' p95 "
                        "distance to their centroid (default 0.25; about 0.05 without drift)")
    p.add_argument("--adapter", action="append", default=[], metavar="NAME=NAME@VERSION|PATH",
                   help="also load this version's LoRA adapter onto the same base model, selected per request "
                        "by adapter_id / the OpenAI `model` field (repeatable; adapters stay unmerged)")
    p.add_argument("--adapter-name", metavar="NAME",
                   help="with --adapter: the name of --version's own adapter (default: its NAME@VERSION)")
    p.add_argument("--default-adapter", metavar="NAME",
                   help="with --adapter: the adapter for requests that name none (default: --version's)")
    p.add_argument("--adapters-file", metavar="FILE",
                   help="with --adapter: a JSON file {\"default\": NAME} polled every second (a mounted ConfigMap); "
                        "the default also switches with POST /adapters/default")
    p.add_argument("--log-level", default="info")
    p.set_defaults(func=cmd_serve)


def _token(args: argparse.Namespace) -> str | None:
    if args.api_token_file:
        try:
            token = open(args.api_token_file, encoding="utf-8").read().strip()
        except OSError as exc:
            raise SystemExit(f"--api-token-file {args.api_token_file}: cannot read: {exc}") from None
        if not token:
            raise SystemExit(f"--api-token-file {args.api_token_file}: file is empty")
        return token
    return os.environ.get("TUNEOPS_API_TOKEN") or None


def cmd_serve(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tuneops.runtime.serve import logs, tracing
    from tuneops.runtime.serve.loader import VersionNotFound, load, resolve_version
    from tuneops.runtime.serve.server import serve_forever
    from tuneops.runtime.serve.state import ServeConfig

    if args.max_input_tokens >= args.max_total_tokens:
        print("--max-input-tokens must be < --max-total-tokens", file=sys.stderr)
        return 2
    for flag, value, top in (("--drift-embedding-outlier-threshold", args.drift_embedding_outlier_threshold, 1.0),
                             ("--drift-embedding-centroid-threshold", args.drift_embedding_centroid_threshold, 2.0)):
        if not 0 < value <= top:
            print(f"{flag} must be in (0, {top:g}], got {value:g}", file=sys.stderr)
            return 2
    from tuneops.runtime.serve.adapters import load_adapter_set, parse_adapter_args

    try:
        extra = parse_adapter_args(args.adapter)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    if not extra and (args.adapter_name or args.default_adapter or args.adapters_file):
        print("--adapter-name, --default-adapter and --adapters-file need at least one --adapter", file=sys.stderr)
        return 2
    try:
        resolve_version(args.version)  # fail fast, before the port opens
        for _, ref in extra:
            resolve_version(ref)
    except VersionNotFound as exc:
        print(exc, file=sys.stderr)
        return 1
    if extra:
        primary = (args.adapter_name, args.version)

        def loader():
            return load_adapter_set(primary, extra, default=args.default_adapter)
    else:
        def loader():
            return load(args.version)
    logs.configure(args.log_level)
    tracing.configure_exporter()
    config = ServeConfig(
        max_input_tokens=args.max_input_tokens, max_total_tokens=args.max_total_tokens,
        max_concurrent_requests=args.max_concurrent_requests, max_batch_size=args.max_batch_size,
        request_timeout_s=args.request_timeout, drain_timeout_s=args.drain_timeout, api_token=_token(args),
        cors_origins=args.cors_origin, drift_reference=Path(args.drift_reference) if args.drift_reference else None,
        drift_embeddings=args.drift_embeddings,
        embedding_centroid_threshold=args.drift_embedding_centroid_threshold,
        embedding_outlier_threshold=args.drift_embedding_outlier_threshold,
        adapters_file=Path(args.adapters_file) if args.adapters_file else None)
    serve_forever(config, loader, host=args.host, port=args.port)
    return 0
