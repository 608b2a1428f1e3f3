"""What each command of ``python -m rtap_trio`` does (the grammar: :mod:`.parser`).

Errors RTAP raises on purpose end the process with one line on stderr and the
error's exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import trio
import yaml

from ..errors import ConfigError, RTAPError, find_error, only_errors
from ..settings import Settings, for_instance, load_settings, load_yaml_value
from ..transport.outbox import Subscription
from ..transport.schemas import Stream
from .parser import COMMANDS, build_parser, instance_numbers

if TYPE_CHECKING:  # the service is imported by the commands that run it
    from ..app import Service

__all__ = ["main"]


def _parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise RTAPError(f"--set {item}: expected KEY=VALUE")
        try:
            overrides[key.strip()] = load_yaml_value(value) if value else ""
        except yaml.YAMLError as exc:
            raise ConfigError("command line", key.strip(), f"invalid YAML value: {exc}") from None
    return overrides


def _settings(args: argparse.Namespace, extra: dict[str, Any] | None = None) -> Settings:
    overrides = _parse_overrides(args.overrides)
    overrides.update(extra or {})
    return load_settings(args.profile, directory=args.settings_dir, overrides=overrides)


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if not args_list or (
        args_list[0] not in COMMANDS and args_list[0] not in ("-h", "--help", "--version")
    ):
        args_list.insert(0, "run")
    args = build_parser().parse_args(args_list)
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {
        "run": _cmd_run,
        "replay": _cmd_replay,
        "config": _cmd_config,
        "models": _cmd_models,
        "devices": _cmd_devices,
        "eval": _cmd_eval,
        "bench": _cmd_bench,
        "soak": _cmd_soak,
        "schemas": _cmd_schemas,
        "proxy": _cmd_proxy,
    }
    try:
        return handlers[args.command](args)
    except BaseException as exc:
        error = find_error(exc, RTAPError)
        if error is not None:
            print(f"rtap: error: {error}", file=sys.stderr)
            return error.exit_code
        if only_errors(exc, KeyboardInterrupt):  # Ctrl-C outside the service's own handling
            return 130
        raise


def _cmd_run(args: argparse.Namespace) -> int:
    from ..allocator import pin_mmap_threshold
    from ..app import Service
    from ..logs import configure_logging

    pin_mmap_threshold()

    extra: dict[str, Any] = {}
    if args.source:
        extra["audio.source"] = args.source
        extra["audio.mock"] = False
    if args.device is not None:
        extra["audio.device"] = args.device
    if args.no_wake:
        extra["wakeword.enabled"] = False
    settings = _settings(args, extra)
    instance, source = args.instance, "command line"
    if instance is None:
        instance, source = os.environ.get("RTAP_INSTANCE") or "0", "RTAP_INSTANCE"
    try:
        if not str(instance).isdigit():
            raise ValueError(f"{instance!r}: expected a number, 0 to 99")
        settings = for_instance(settings, int(instance))
    except ValueError as exc:
        raise ConfigError(source, "--instance", str(exc)) from None
    service = Service(settings)
    configure_logging(settings.telemetry, service.service_id)
    show = args.print_transcripts
    if show is None:  # the demo is there to be watched
        show = settings.audio.effective_source == "demo"
    if not show:
        trio.run(service.run)
        return 0
    subscription = service.outbox.subscribe("stdout", (Stream.TRANSCRIPTS,), 1000)
    trio.run(_run_printing, service, subscription)
    return 0


_PRINTED_KEYS = (
    "utterance_id",
    "text",
    "language",
    "language_confidence",
    "sentiment",
    "sentiment_confidence",
    "wake_word",
    "audio_start_s",
    "audio_end_s",
    "latency_ms",
)


async def _run_printing(service: Service, subscription: Subscription) -> None:
    """Run the service; one JSON line per transcript on stdout until its outbox closes.

    The service closes its outbox however its run ends, so the printer ends too.
    """

    async def print_transcripts() -> None:
        async for item in subscription.receive:
            record = item.message.model_dump(mode="json")
            line = json.dumps({key: record[key] for key in _PRINTED_KEYS}, ensure_ascii=False)
            print(line, flush=True)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(print_transcripts)
        await service.run()


def _cmd_replay(args: argparse.Namespace) -> int:
    from ..allocator import pin_mmap_threshold
    from ..audio.file import check_audio_file, replay_source

    pin_mmap_threshold()

    extra: dict[str, Any] = {
        "audio.source": f"file:{args.path}",
        "audio.mock": False,
        "audio.realtime": bool(args.realtime),
        # Replay is a batch job: no listening ports.
        "output.zmq_enabled": False,
        "output.websocket_enabled": False,
        "http.enabled": False,
    }
    if args.no_wake:
        extra["wakeword.enabled"] = False
    settings = _settings(args, extra)
    # A path that is not audio is refused here, not once the service has started
    # loading its engines beside the source (0.7 s of CPU more before the same line).
    check_audio_file(args.path, settings.audio.sample_rate)
    from ..app import Service
    from ..logs import configure_logging

    source = replay_source(args.path, settings.audio, settings.vad, realtime=bool(args.realtime))
    service = Service(settings, source=source)
    configure_logging(settings.telemetry, service.service_id)
    subscription = service.outbox.subscribe("replay", (Stream.TRANSCRIPTS,), 100_000)
    started = time.perf_counter()
    trio.run(_run_printing, service, subscription)
    elapsed = time.perf_counter() - started
    if source.duration_s:
        print(
            f"replayed {source.duration_s:.1f}s of audio in {elapsed:.1f}s "
            f"({source.duration_s / elapsed:.1f}x real time, model loading included)",
            file=sys.stderr,
        )
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    settings = _settings(args)
    for line in settings.deprecations:
        print(f"warning: {line}", file=sys.stderr)
    data = settings.model_dump(mode="json")
    if args.format == "json":
        print(json.dumps(data, indent=2))
    else:
        print(yaml.safe_dump(data, sort_keys=False), end="")
    return 0


def _cmd_schemas(args: argparse.Namespace) -> int:
    from ..protocol import write_schemas

    for path in write_schemas(args.out):
        print(path)
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from ..stt.whispercpp.models import (
        KNOWN_MODELS,
        cached_model_path,
        default_cache_dir,
        resolve_whisper_model,
    )
    from ..turn.model import default_model_path, fetch_smart_turn

    settings = _settings(args)
    cache = settings.stt.whispercpp.model_cache_dir or default_cache_dir()
    turn_model = settings.turn.model_path or default_model_path()
    if args.models_command == "fetch":
        started = time.perf_counter()
        path = fetch_smart_turn(turn_model, wheel=args.wheel)
        elapsed = time.perf_counter() - started
        print(f"smart-turn: {path} ({path.stat().st_size:,} bytes, {elapsed:.1f}s)")
        return 0
    if args.models_command == "list":
        for name, model in KNOWN_MODELS.items():
            for dtype in model.ggml_sizes:
                path = cached_model_path(name, cache, dtype)  # type: ignore[arg-type]
                size = f"{path} ({path.stat().st_size:,} bytes)" if path.is_file() else None
                print(f"{name:10s} {dtype:5s} {size or 'not converted'}")
        size = (
            f"{turn_model} ({turn_model.stat().st_size:,} bytes)" if turn_model.is_file() else None
        )
        print(f"{'smart-turn':10s} {'int8':5s} {size or 'not fetched'}")
        return 0
    for name in args.names or [settings.stt.whispercpp.model_name]:
        for dtype in args.dtype or [settings.stt.whispercpp.compute_dtype]:
            started = time.perf_counter()
            path = resolve_whisper_model(name, cache, ftype=dtype)
            elapsed = time.perf_counter() - started
            print(f"{name} {dtype}: {path} ({path.stat().st_size:,} bytes, {elapsed:.1f}s)")
    return 0


def _cmd_devices(args: argparse.Namespace) -> int:
    from ..audio.mic import list_input_devices

    for device in list_input_devices():
        print(f"{device['index']:3d}  {device['name']}  ({device['channels']} ch)")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from ..evaluation import run_eval_command

    return run_eval_command(
        path=args.path,
        references=args.references,
        profile=args.profile,
        settings_dir=args.settings_dir,
        overrides=_parse_overrides(args.overrides),
        only=args.only,
        out=args.out,
        command=f"python -m rtap_trio {shlex.join(sys.argv[1:])}",
    )


def _cmd_bench(args: argparse.Namespace) -> int:
    from ..bench.runner import BenchOptions, run_bench

    report = run_bench(
        BenchOptions(
            settings=_settings(args),
            out=args.out,
            quick=args.quick,
            corpus=args.corpus,
            only=args.only or [],
            profile=args.profile,
            settings_dir=args.settings_dir,
            overrides=list(args.overrides),
            argv=list(sys.argv[1:]),
            balance=args.balance,
        )
    )
    print((args.out / "bench.md").read_text(encoding="utf-8"), end="")
    failed = [name for name, s in report["sections"].items() if s["status"] == "error"]
    return 1 if failed else 0


def _cmd_soak(args: argparse.Namespace) -> int:
    from ..bench.common import corpus_clips, default_corpus, fixture_clips, quiet_logging
    from ..bench.soak import run_soak

    quiet_logging()
    clips = [c for c in corpus_clips(args.corpus or default_corpus()) if c.language == "en"]
    clips = clips or [c for c in fixture_clips() if c.has_speech and c.language == "en"]
    report = run_soak(
        clips,
        seconds=args.minutes * 60,
        clients=args.clients,
        profile=args.profile,
        settings_dir=args.settings_dir,
        overrides=list(args.overrides),
        out=args.out,
        hostile=args.hostile,
    )
    summary = {key: value for key, value in report.items() if key != "samples"}
    print(json.dumps(summary, indent=2))
    flat = report["rss_growth"] <= report["rss_growth_limit"]
    whole = not report["unaccounted"] and not report["frames_dropped"]
    refused = not (report["hostile"] or {}).get("unexpected")
    return 0 if flat and whole and refused else 1


def _cmd_proxy(args: argparse.Namespace) -> int:
    from loguru import logger
    from pydantic import ValidationError

    from ..errors import validation_problem
    from ..logs import configure_logging
    from ..settings import TelemetrySettings
    from ..zmq_proxy import (
        STREAMS,
        check_endpoint,
        describe,
        instance_endpoints,
        make_plans,
        run_proxy,
    )

    try:
        telemetry = TelemetrySettings(log_level=os.environ.get("RTAP_LOG_LEVEL") or "INFO")
    except ValidationError as exc:
        raise ConfigError("environment", "RTAP_LOG_LEVEL", validation_problem(exc, "")) from None
    configure_logging(telemetry, "proxy")
    instances = args.instance
    if not instances and not (args.events or args.transcripts):
        try:
            instances = instance_numbers(os.environ.get("RTAP_PROXY_INSTANCES", ""))
        except argparse.ArgumentTypeError as exc:
            raise ConfigError("environment", "RTAP_PROXY_INSTANCES", str(exc)) from None
    upstream: dict[str, list[str]] = {stream: [] for stream in STREAMS}
    for number in instances:
        for stream, endpoint in instance_endpoints(number, args.host).items():
            upstream[stream].append(endpoint)
    for stream in STREAMS:
        upstream[stream] += [check_endpoint(f"--{stream}", e) for e in getattr(args, stream)]
    binds = {
        stream: check_endpoint(f"--bind-{stream}", getattr(args, f"bind_{stream}"), bind=True)
        for stream in STREAMS
    }
    plans = make_plans(upstream, binds)

    def ready(bound: dict[str, str]) -> None:
        print(describe(bound, plans), flush=True)
        for plan in plans:
            logger.bind(component="zmq-proxy").info(
                "{}: {} from {}", plan.name, bound[plan.name], ", ".join(plan.upstream)
            )

    code = run_proxy(plans, ready=ready)
    logger.bind(component="zmq-proxy").info("stopped")
    return code
