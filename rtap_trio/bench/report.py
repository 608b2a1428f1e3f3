"""The report: machine and versions, targets, JSON and a short Markdown table."""

from __future__ import annotations

import datetime as dt
import json
import shlex
from pathlib import Path
from typing import Any

# The bench and eval reports describe the machine alike: one description.
from ..machine import describe_machine as machine
from ..machine import package_version

__all__ = [
    "TARGETS",
    "command_line",
    "headline",
    "machine",
    "now_utc",
    "versions",
    "write_report",
]

_PACKAGES = (
    "rtap-trio",
    "pywhispercpp",
    "faster-whisper",
    "ctranslate2",
    "numpy",
    "trio",
    "trio-websocket",
    "pyzmq",
    "pvporcupine",
    "webrtcvad-wheels",
    "fasttext-predict",
)


def versions() -> dict[str, str | None]:
    found = {name: package_version(name) for name in _PACKAGES}
    try:
        import _pywhispercpp

        # whisper.cpp's own view of the CPU features it was built with.
        found["whisper.cpp system_info"] = str(_pywhispercpp.whisper_print_system_info()).strip()
    except Exception:  # the report must not fail on a diagnostic
        found["whisper.cpp system_info"] = None
    return found


#: headline -> (path in the report, comparison, target, unit)
TARGETS: dict[str, tuple[tuple[str, ...], str, float | None, str]] = {
    "front-end per frame p50": (("frontend", "per_frame_ms", "p50"), "<=", None, "ms"),
    "front-end per frame p95": (("frontend", "per_frame_ms", "p95"), "<=", None, "ms"),
    "front-end per frame p99, all frames": (("frontend", "per_frame_ms", "p99"), "<=", 0.2, "ms"),
    "front-end per frame p99, all frames, CPU time": (
        ("frontend", "per_frame_cpu_ms", "p99"),
        "<=",
        0.2,
        "ms",
    ),
    "front-end per frame p99 while LISTENING (VAD, endpointer)": (
        ("frontend", "per_frame_ms_listening", "p99"),
        "<=",
        0.2,
        "ms",
    ),
    "front-end per frame p99, wake word on (IDLE: VAD + Porcupine)": (
        ("frontend", "per_frame_ms_idle_wake_word", "p99"),
        "<=",
        0.2,
        "ms",
    ),
    "Porcupine 1.9.5 alone, per 32 ms block p99 (the IDLE floor)": (
        ("frontend", "porcupine_alone_per_call_ms", "p99"),
        "<=",
        None,
        "ms",
    ),
    "front-end per frame p99, back-to-back (warm caches), wake word": (
        ("frontend", "wake_word", "unpaced", "per_frame_ms", "p99"),
        "<=",
        None,
        "ms",
    ),
    "front-end per frame p99, back-to-back (warm caches), VAD": (
        ("frontend", "vad", "unpaced", "per_frame_ms", "p99"),
        "<=",
        None,
        "ms",
    ),
    "front-end CPU while LISTENING": (("frontend", "cpu_percent_listening"), "<=", None, "%"),
    "front-end CPU while IDLE (wake word)": (
        ("frontend", "cpu_percent_idle_wake_word"),
        "<=",
        None,
        "%",
    ),
    "end of speech -> ZeroMQ transcript p50, early transcription off": (
        ("latency", "without_early", "ms", "total", "p50"),
        "<=",
        None,
        "ms",
    ),
    "end of speech -> ZeroMQ transcript p50, without the end-of-turn detector": (
        ("latency", "without_turn", "ms", "total", "p50"),
        "<=",
        None,
        "ms",
    ),
    "end of speech -> ZeroMQ transcript p50": (("latency", "ms", "total", "p50"), "<=", None, "ms"),
    "end of speech -> ZeroMQ transcript p95": (("latency", "ms", "total", "p95"), "<=", None, "ms"),
    "end of speech -> ZeroMQ transcript p50, recorded commands": (
        ("latency", "real_speech", "ms", "total", "p50"),
        "<=",
        None,
        "ms",
    ),
    "end of speech -> ZeroMQ transcript p95, recorded commands": (
        ("latency", "real_speech", "ms", "total", "p95"),
        "<=",
        None,
        "ms",
    ),
    "end of speech -> ZeroMQ transcript p50, recorded commands, without the detector": (
        ("latency", "real_speech", "without_turn", "ms", "total", "p50"),
        "<=",
        None,
        "ms",
    ),
    "waiting for an STT worker p95": (("latency", "ms", "queue", "p95"), "<=", None, "ms"),
    "peer policy (fixed silence, then faster-whisper int8) p50": (
        ("latency", "peer", "ms", "p50"),
        "<=",
        None,
        "ms",
    ),
    "first partial after speech start p50": (
        ("latency", "partials", "first_after_speech_start_ms", "p50"),
        "<=",
        None,
        "ms",
    ),
    "final words changed by early transcription (WER against off)": (
        ("latency", "same_words_wer"),
        "<=",
        0.0,
        "",
    ),
    "pipeline overhead outside STT, queue and hangover p95": (
        ("latency", "ms", "overhead", "p95"),
        "<=",
        5.0,
        "ms",
    ),
    "STT per utterance p50 (whisper.cpp)": (
        ("stt_ab", "whisper_cpp", "per_utterance_ms", "p50"),
        "<=",
        None,
        "ms",
    ),
    "STT whisper.cpp / faster-whisper int8": (
        ("stt_ab", "ratios", "whisper_cpp/faster_whisper_int8", "total"),
        "<=",
        0.8,
        "x",
    ),
    "STT whisper.cpp / faster-whisper float32": (
        ("stt_ab", "ratios", "whisper_cpp/faster_whisper_float32", "total"),
        "<=",
        None,
        "x",
    ),
    "replay throughput": (("throughput", "realtime_factor"), ">=", None, "x real time"),
    "replay throughput, tiny.en": (
        ("throughput_tiny_en", "realtime_factor"),
        ">=",
        10.0,
        "x real time",
    ),
    "peak RSS, service on the demo": (("memory", "peak_rss_mb"), "<=", 200.0, "MB"),
    "WebSocket delivery p99, 100 clients": (("fanout", "delay_ms", "p99"), "<=", None, "ms"),
    "real-time sessions within 2x the single-session p95": (
        ("concurrency", "max_sessions_within_2x_p95"),
        ">=",
        4.0,
        "sessions",
    ),
    "CPU of an idle connected session": (
        ("concurrency", "idle", "cpu_percent_per_idle_session"),
        "<=",
        None,
        "% of a core",
    ),
    "STT per command, local engine p50": (("remote", "local_ms", "p50"), "<=", None, "ms"),
    "STT per command, remote engine over loopback p50": (
        ("remote", "remote_ms", "p50"),
        "<=",
        None,
        "ms",
    ),
}


def _lookup(report: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = report
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def headline(report: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    tiny = report.get("model") == "tiny.en"
    for name, (path, op, target, unit) in TARGETS.items():
        value = _lookup(report, path)
        if value is None:
            continue
        if name == "replay throughput" and tiny:
            name, target = "replay throughput, tiny.en", 10.0
        # The targets of pc2 and of the default profile (issue 18).
        if name in (
            "end of speech -> ZeroMQ transcript p50",
            "end of speech -> ZeroMQ transcript p50, recorded commands",
        ):
            target = 400.0 if tiny else 1200.0
        if (
            name
            in (
                "end of speech -> ZeroMQ transcript p95",
                "end of speech -> ZeroMQ transcript p95, recorded commands",
            )
            and tiny
        ):
            target = 500.0
        if name == "first partial after speech start p50" and tiny:
            target = 900.0
        # Issue 7's four sessions are pc2's target: base's ~1.4 s of STT per
        # utterance cannot serve four talkers on two cores, and was never asked to.
        if name == "real-time sessions within 2x the single-session p95" and not tiny:
            target = None
        met = None
        if target is not None:
            met = value <= target if op == "<=" else value >= target
        rows.append(
            {"figure": name, "value": value, "unit": unit, "target": target, "op": op, "met": met}
        )
    return rows


def _real_speech_lines(real: Any) -> list[str]:
    """The recorded commands' end of speech -> transcript, with and without the detector."""
    if not isinstance(real, dict) or not real.get("utterances"):
        return []
    total = real["ms"]["total"]
    line = (
        f"Recorded commands (../shared/corpus, {real['utterances']} utterances): end of "
        f"speech -> transcript p50 {total['p50']:g} ms, p95 {total['p95']:g} ms"
    )
    without = real.get("without_turn")
    if isinstance(without, dict) and without.get("utterances"):
        other = without["ms"]["total"]
        line += f"; without the end-of-turn detector {other['p50']:g} / {other['p95']:g} ms"
    return ["", line + "."]


def _markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    flags = ", ".join(flag for flag, present in m["flags"].items() if present) or "none"
    lines = [
        f"# RTAP benchmark ({report['profile']}, model {report['model']}"
        f"{', quick' if report['quick'] else ''})",
        "",
        f"{report['date']} on {m['cpu_model']}, {m['cores_usable']} of {m['cores']} cores "
        f"({flags}); load average {m['load_average_at_start'][0]} at start, "
        f"{m.get('load_average_at_end', ['?'])[0]} at the end.",
        f"`{report['command']}`, {report['duration_s']} s.",
        "",
        "| figure | value | target | |",
        "|---|---:|---:|---|",
    ]
    for row in report["headline"]:
        target = "" if row["target"] is None else f"{row['op']} {row['target']:g}"
        met = {True: "ok", False: "**missed**", None: ""}[row["met"]]
        lines.append(f"| {row['figure']} | {row['value']:g} {row['unit']} | {target} | {met} |")
    skipped = [
        f"- {name}: {section.get('status')} ({section.get('reason') or section.get('error')})"
        for name, section in report["sections"].items()
        if section.get("status") != "ok"
    ]
    if skipped:
        lines += ["", "Not measured:", "", *skipped]
    lines += _stt_ab_table(report.get("stt_ab"))
    latency = report.get("latency")
    if isinstance(latency, dict) and "ms" in latency:
        off = latency.get("without_early", {}).get("ms", {})
        lines += [
            "",
            f"End of speech -> transcript, {latency['utterances']} utterances (ms), with early "
            f"transcription ({latency.get('early_used', 0)} used) and without:",
            "",
            "| part | p50 | p95 | p50 without | p95 without |",
            "|---|---:|---:|---:|---:|",
        ]
        for part, stats in latency["ms"].items():
            if stats.get("n"):
                other = off.get(part, {})
                lines.append(
                    f"| {part} | {stats['p50']:g} | {stats['p95']:g} "
                    f"| {other.get('p50', '')} | {other.get('p95', '')} |"
                )
        partials = latency.get("partials", {})
        if partials.get("utterances_with_partials"):
            first = partials["first_after_speech_start_ms"]
            lines += [
                "",
                f"Partials: {partials['per_utterance'].get('mean', 0):g} per utterance, the "
                f"first {first.get('p50', '-')} ms after speech start (p50); "
                f"{partials['unstable_words_changed_share']} of unstable words changed later. "
                f"CPU: {latency.get('cpu_s')} s with early and partial work, "
                f"{latency.get('without_early', {}).get('cpu_s')} s without; final words "
                f"against without: WER {latency.get('same_words_wer')}.",
            ]
        lines += _real_speech_lines(latency.get("real_speech"))
    lines += _vad_table(report.get("vad"))
    lines += _turns_table(report.get("turns"))
    lines += _concurrency_table(report.get("concurrency"))
    lines += _remote_table(report.get("remote"))
    return "\n".join(lines) + "\n"


def _turns_table(turns: Any) -> list[str]:
    if not isinstance(turns, dict) or not turns.get("sets"):
        return []
    lines = [
        "",
        f"End-of-turn policies (hangover {turns['hangover_ms']} ms; speech end -> transcript "
        "and the endpoint's wait after the speech, ms):",
        "",
        "| set | turn.engine | turns | cut | lost | WER | endpoint p50 | p95 "
        "| transcript p50 | p95 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, policies in turns["sets"].items():
        for engine, row in policies.items():
            endpoint, total = row["endpoint_ms"], row["speech_end_to_transcript_ms"]
            lines.append(
                f"| {name} | {engine} | {row['turns']} | {row['cut']} | {row['lost']} "
                f"| {row['wer']} | {endpoint.get('p50', '-')} | {endpoint.get('p95', '-')} "
                f"| {total.get('p50', '-')} | {total.get('p95', '-')} |"
            )
    cuts = [
        f"- {name}, {engine}: " + "; ".join(f'"{pieces}"' for pieces in row["cut_turns"])
        for name, policies in turns["sets"].items()
        for engine, row in policies.items()
        if row.get("cut_turns")
    ]
    if cuts:
        lines += ["", "Cut turns, as they came out (the pieces between bars):", "", *cuts]
    return lines


def _remote_table(remote: Any) -> list[str]:
    if not isinstance(remote, dict) or not remote.get("per_clip_median_ms"):
        return []
    lines = [
        "",
        f"Remote STT (stt.engine remote: a second RTAP over loopback, {remote['model']}) "
        f"against the local engine, same clips, median of {remote['runs']} runs (ms); "
        f"remote adds {remote['remote_overhead_ms_p50']:g} ms (median), words WER "
        f"{remote['text_wer_remote_vs_local']:g} between the two:",
        "",
        "| clip | audio s | local | remote |",
        "|---|---:|---:|---:|",
    ]
    for name, row in remote["per_clip_median_ms"].items():
        lines.append(f"| {name} | {row['audio_s']:g} | {row['local']:g} | {row['remote']:g} |")
    return lines


def _or_dash(value: Any) -> str:
    return "-" if value is None else str(value)


def _vad_table(vad: Any) -> list[str]:
    if not isinstance(vad, dict) or not vad.get("levels"):
        return []
    floor = vad["true_boundaries"]
    lines = [
        "",
        f"Voice activity engines: {floor['utterances']} "
        f"generated commands ({vad['words']} words, {vad['audio_s']} s) in {vad['noise']}; "
        f"false starts on {vad['noise_only_s']:g} s of the noise alone (clean: room noise). "
        f"Words lost are counted on the clean audio cut where the engine cut the noisy one "
        f"({vad['model']}); "
        + (
            f"cut at the true boundaries, {floor['words_lost_start']} + "
            f"{floor['words_lost_end']} are lost anyway:"
            if floor["words_lost_start"] is not None
            else "quick: only where clean, and no floor:"
        ),
        "",
        "| SNR | engine | whole | split | merged | missed | words lost start | end "
        "| false starts |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for level in vad["levels"]:
        snr = "clean" if level["snr_db"] is None else f"{level['snr_db']:g} dB"
        for engine, row in level["engines"].items():
            lines.append(
                f"| {snr} | {engine} | {row['found_whole']}/{row['utterances']} "
                f"| {row['split']} | {row['merged']} | {row['missed']} "
                f"| {_or_dash(row['words_lost_start'])} | {_or_dash(row['words_lost_end'])} "
                f"| {row['false_starts_noise_only']} |"
            )
    cpu = ", ".join(
        f"{engine} {stats['p50']:g} µs" for engine, stats in vad["cpu_us_per_frame"].items()
    )
    lines += ["", f"CPU per 20 ms frame (median of 3 passes): {cpu}."]
    return lines


def _concurrency_table(concurrency: Any) -> list[str]:
    if not isinstance(concurrency, dict) or not concurrency.get("runs"):
        return []
    idle = concurrency["idle"]
    lines = [
        "",
        f"Concurrent `/v1/audio` sessions, each streaming real speech at real-time pace "
        f"(`{concurrency['command']}`"
        + (
            f", {concurrency['instances']} instances behind {concurrency['through']}"
            if concurrency.get("through")
            else ""
        )
        + "); latency is end of speech -> transcript at the client:",
        "",
        "| sessions | utterances | transcripts | lost | p50 | p95 | p95 / 1 session "
        "| endpoint p50 / p95 | after it p50 / p95 | queue p50 | queue p95 "
        "| service CPU | peak RSS |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in concurrency["runs"]:
        latency, queue = run["latency_ms"], run["queue_ms"]
        endpoint, after = run.get("endpoint_ms", {}), run.get("after_endpoint_ms", {})
        lines.append(
            f"| {run['sessions']} | {run['utterances']} | {run['transcripts']} "
            f"| {run['dropped_or_timed_out']} | {latency.get('p50', '-'):g} ms "
            f"| {latency.get('p95', '-'):g} ms | {run['p95_vs_single']:g} x "
            f"| {endpoint.get('p50', '-')} / {endpoint.get('p95', '-')} ms "
            f"| {after.get('p50', '-')} / {after.get('p95', '-')} ms "
            f"| {queue.get('p50', '-'):g} ms | {queue.get('p95', '-'):g} ms "
            f"| {run['cpu_percent']:g} % | {run['peak_rss_mb']:g} MB |"
        )
    lines += [
        "",
        f"Largest N within 2x the single-session p95: "
        f"{concurrency['max_sessions_within_2x_p95']}. Idle connected sessions "
        f"(streaming silence, front-end only): {idle['cpu_percent_per_idle_session']:g} % "
        f"of a core each ({idle['sessions']} sessions: service at "
        f"{idle['service_cpu_percent_with_idle_sessions']:g} %, "
        f"{idle['service_cpu_percent_no_session']:g} % with none).",
    ]
    return lines


def _stt_ab_table(stt: Any) -> list[str]:
    if not isinstance(stt, dict) or "whisper_cpp" not in stt:
        return []
    lines = [
        "",
        f"STT A/B, {stt['model']}, {stt['threads']} threads, {len(stt['clips'])} clips "
        f"({stt['audio_s']} s of audio), median of the repetitions per clip:",
        "",
        "| engine | total | whisper.cpp / engine | word errors | WER |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, section in stt.items():
        if not (isinstance(section, dict) and section.get("status") == "ok"):
            continue
        ratio = stt.get("ratios", {}).get(f"whisper_cpp/{name}", {}).get("total")
        errors = section.get("word_errors", {})
        wer = errors.get("wer")
        lines.append(
            f"| {name.replace('_', ' ')} | {section['total_s']:g} s "
            f"| {'' if ratio is None else f'{ratio:g} x'} "
            f"| {errors.get('errors', '?')} of {errors.get('reference_words', '?')} "
            f"| {'' if wer is None else f'{100 * wer:.1f} %'} |"
        )
    return lines


def write_report(report: dict[str, Any], out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "bench.json"
    md_path = out / "bench.md"
    json_path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    md_path.write_text(_markdown(report), encoding="utf-8")
    return json_path, md_path


def now_utc() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def command_line(argv: list[str]) -> str:
    return shlex.join(["python", "-m", "rtap_trio", *argv])
